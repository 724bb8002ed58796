"""``mono-depth replay``: publish a bag onto its topics with the recorded timing.

For machines without ``ros2 bag`` (the PyPI-wheel install); with a ROS 2
installation ``ros2 bag play`` works with the node just as well. Reads rosbag2
(folders, bare mcap / sqlite3 files) and ROS 1 bags through rosbags. rosbag2 payloads
are published as stored (no decode / re-encode) with each topic's recorded QoS; ROS 1
payloads are converted to ROS 2 CDR with rosbags' converter, and topics whose type has
no ROS 2 equivalent are refused by name (latched ROS 1 topics are offered transient-local).
Publishes ``/clock`` for nodes running with ``use_sim_time``, from the record time or
the messages' header stamps (``--clock-source``).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from mono_depth_ros.msgconv import ns_to_stamp, stamp_to_ns
from .conversions import message_class

__all__ = ["add_arguments", "main", "replay"]

log = logging.getLogger("mono_depth_ros.replay")

#: Where ``/clock`` comes from: the bag's record time, or the messages' ``header.stamp``.
CLOCK_SOURCES = ("record", "header")

#: Pause after the first subscriber appears, before the first message (see --wait-subscribers).
DISCOVERY_SETTLE_S = 1.5   # loopback discovery took > 0.5 s on a loaded 2-core machine (first messages lost)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", type=Path, help="rosbag2 directory / .mcap / .db3, or a ROS 1 .bag")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (>0)")
    p.add_argument("--loop", action="store_true", help="play again from the start when the end is reached")
    p.add_argument("--topics", nargs="+", default=None, help="only these topics")
    p.add_argument("--remap", nargs="+", default=[], metavar="FROM:=TO", help="publish FROM under the name TO")
    p.add_argument("--start-offset", type=float, default=0.0, help="skip this many seconds from the start")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many bag seconds (0 = all)")
    p.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    p.add_argument("--clock-rate", type=float, default=40.0, help="/clock publication rate [Hz] (rosbag2's default)")
    p.add_argument("--clock-source", choices=CLOCK_SOURCES, default="record",
                   help="/clock from the bag's record (receive) time, or from the messages' header.stamp "
                        "(for bags whose headers carry another time base than the recorder's clock; "
                        "messages without a header do not move it; it never goes backwards)")
    p.add_argument("--wait-subscribers", type=float, default=0.0,
                   help="wait up to this many seconds for a subscriber on the first image topic, then "
                        f"{DISCOVERY_SETTLE_S} s for discovery to settle")
    p.add_argument("--quiet", action="store_true", help="no progress bar")




def _qos_from_bag(conn):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    profiles = getattr(getattr(conn, "ext", None), "offered_qos_profiles", None) or []
    latched = bool(getattr(getattr(conn, "ext", None), "latching", None))      # ROS 1 latched topic
    transient = latched or any(getattr(getattr(q, "durability", None), "name", "") == "TRANSIENT_LOCAL"
                               for q in profiles)
    best_effort = bool(profiles) and all(getattr(getattr(q, "reliability", None), "name", "") == "BEST_EFFORT"
                                         for q in profiles)
    return QoSProfile(depth=100 if not transient else 10, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE)


def _header_ns(msg, last_ns: int | None) -> int | None:
    """``header.stamp`` of a message in ns (None without a header, or when it would move the clock back)."""
    stamp = getattr(getattr(msg, "header", None), "stamp", None)
    if stamp is None:
        return None
    ns = stamp_to_ns(stamp)
    return None if last_ns is not None and ns < last_ns else ns


def replay(node, bag: Path, rate: float = 1.0, loop: bool = False, topics=None, remap: dict | None = None,
           start_offset: float = 0.0, duration: float = 0.0, clock: bool = True, wait_subscribers: float = 0.0,
           progress: bool = True, should_stop=lambda: False, clock_rate: float = 40.0,
           clock_source: str = "record") -> int:
    """Publish ``bag`` through ``node``. Returns the number of messages published.

    ``clock_source``: "record" (``/clock`` = the bag's record time, like ``ros2 bag play --clock``) or
    "header" (``/clock`` = the newest ``header.stamp`` published so far, never backwards).
    """
    from rclpy.qos import QoSProfile
    from rosgraph_msgs.msg import Clock
    from tqdm import tqdm

    from mono_depth_ros.bagio import _default_typestore, is_ros1, open_reader, ros2_converters

    if rate <= 0:
        raise ValueError(f"--rate must be > 0, got {rate}")
    if clock_source not in CLOCK_SOURCES:
        raise ValueError(f"--clock-source must be one of {CLOCK_SOURCES}, got {clock_source!r}")
    remap = remap or {}
    published = 0
    with open_reader(bag) as reader:
        selected = [c for c in reader.connections if not topics or c.topic in topics]
        # ROS 1 payloads become ROS 2 CDR (rosbags' converter); other types are refused by name.
        if is_ros1(reader):
            ros2 = ros2_converters(reader, selected)
            store = _default_typestore()
        else:
            ros2 = {c.id: (c.msgtype, bytes) for c in selected}
            store = reader.typestore
        conns, pubs = [], {}
        for c in selected:
            msgtype = ros2[c.id][0]
            try:
                cls = message_class(msgtype)
            except (ImportError, AttributeError, ValueError):
                log.warning("skipping topic %s: message type %s is not available here", c.topic, msgtype)
                continue
            if c.topic not in pubs:
                pubs[c.topic] = node.create_publisher(cls, remap.get(c.topic, c.topic), _qos_from_bag(c))
            conns.append(c)
        if not conns:
            raise ValueError(f"{bag}: nothing to replay (topics {topics or 'all'} not found or of unknown type)")
        clock_pub = node.create_publisher(Clock, "/clock", QoSProfile(depth=10)) if clock else None
        if wait_subscribers > 0:
            img = next((t for t in pubs if "image" in t), next(iter(pubs)))
            end = time.monotonic() + wait_subscribers
            while pubs[img].get_subscription_count() == 0 and time.monotonic() < end:
                time.sleep(0.05)
            # A matched subscription on our side does not mean discovery has finished on the
            # subscriber's side (nor for its other topics): the first messages would arrive late.
            time.sleep(DISCOVERY_SETTLE_S)
        t_start = reader.start_time + int(start_offset * 1e9)
        t_end = reader.end_time if duration <= 0 else min(reader.end_time, t_start + int(duration * 1e9))
        total = max(t_end - t_start, 1)
        while True:
            wall0 = None  # set at the first message: opening the bag's first chunk takes time
            bar = tqdm(total=round(total / 1e9, 1), unit="s", desc=f"replay {Path(bag).name}", disable=not progress,
                       mininterval=0.5 if sys.stderr.isatty() else 5.0,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} bag s [{elapsed}]")
            last_clock = None
            clock_step = int(1e9 / clock_rate) if clock_rate > 0 else 0
            for conn, t, raw in reader.messages(connections=conns, start=t_start, stop=t_end + 1):
                if should_stop():
                    bar.close()
                    return published
                if wall0 is None:
                    wall0 = time.monotonic() - (t - t_start) / 1e9 / rate
                due = wall0 + (t - t_start) / 1e9 / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                msgtype, to_cdr = ros2[conn.id]
                data = to_cdr(raw)
                if clock_pub is not None:
                    now = t if clock_source == "record" else _header_ns(store.deserialize_cdr(data, msgtype),
                                                                        last_clock)
                    if now is not None and (last_clock is None or now - last_clock >= clock_step):
                        msg = Clock()
                        msg.clock.sec, msg.clock.nanosec = ns_to_stamp(now)
                        clock_pub.publish(msg)
                        last_clock = now
                pubs[conn.topic].publish(data)
                published += 1
                bar.update(round((t - t_start) / 1e9, 1) - bar.n)
            bar.n = bar.total
            bar.close()
            if not loop:
                return published


def main(args: argparse.Namespace) -> int:
    import rclpy

    remap = {}
    for r in args.remap:
        if ":=" not in r:
            raise SystemExit(f"--remap expects FROM:=TO, got {r!r}")
        a, b = r.split(":=", 1)
        remap[a] = b
    logging.basicConfig(level=logging.INFO, format="[replay] %(message)s")
    from .domain import exit_if_invalid_domain_id
    exit_if_invalid_domain_id("mono-depth replay")
    rclpy.init()
    node = rclpy.create_node("mono_depth_replay")
    try:
        n = replay(node, args.bag, args.rate, args.loop, args.topics, remap, args.start_offset, args.duration,
                   not args.no_clock, args.wait_subscribers, not args.quiet, clock_rate=args.clock_rate,
                   clock_source=args.clock_source)
        print(f"replayed {n} messages from {args.bag}")
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # bag errors: say which file and why
        print(f"mono-depth replay: error: {exc}")
        return 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
