"""``mono-depth record``: chosen topics to a rosbag2 (mcap or sqlite3), written with rosbags.

For machines without ``ros2 bag``. Messages are stored as received (raw CDR, no
decode), stamped with the middleware's receive time like ``ros2 bag record``, with the
publishers' reliability and durability (``/tf_static`` stays transient-local). The metadata is
rosbag2's: version 9, each publisher's offered QoS, the real ``ros_distro``, and
``topic_type_hash`` in mcap channels. The bag is written
into ``OUT.partial/`` and moved to ``OUT`` only when recording ends cleanly
(Ctrl-C included), so an interrupted recording never looks complete.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from .conversions import message_class

__all__ = ["add_arguments", "main", "Recorder"]

log = logging.getLogger("mono_depth_ros.record")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="bag directory to create (must not exist unless --overwrite)")
    p.add_argument("--topics", nargs="+", required=True, help="topics to record (e.g. /depth /points /diagnostics)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = until Ctrl-C)")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for each topic to appear")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage plugin")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")


def ros_distro() -> str:
    """The distro to write into ``metadata.yaml``: the sourced one, else Kilted (the PyPI wheels)."""
    return os.environ.get("ROS_DISTRO", "").strip() or "kilted"


def offered_qos(infos) -> list:
    """rosbags ``Qos`` of each publisher (``rclpy`` ``TopicEndpointInfo``), as ``ros2 bag record`` stores them.

    Durations keep rmw's "infinite" (2**63 - 1 ns -> sec 9223372036, nsec 854775807).
    """
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    def enum(kind, policy):
        return getattr(kind, getattr(policy, "name", "UNKNOWN"), kind.UNKNOWN)

    def dur(d):
        return QosTime(*divmod(int(d.nanoseconds), 1_000_000_000))

    out = []
    for info in infos:
        q = info.qos_profile
        out.append(Qos(enum(QosHistory, q.history), int(q.depth), enum(QosReliability, q.reliability),
                       enum(QosDurability, q.durability), dur(q.deadline), dur(q.lifespan),
                       enum(QosLiveliness, q.liveliness), dur(q.liveliness_lease_duration),
                       bool(q.avoid_ros_namespace_conventions)))
    return out


def _bag_writer_class():
    """rosbags' rosbag2 ``Writer``, made to write what rosbag2 writes.

    * ``ros_distro`` in ``metadata.yaml`` and in the storage's copy of it is the real distro
      (rosbags writes ``rosbags``);
    * mcap channels carry ``topic_type_hash`` (RIHS01) beside ``offered_qos_profiles``, like
      rosbag2_storage_mcap (rosbags writes only the QoS).
    Both go through rosbags internals (``McapWriter``, the storage's ``close``); if a rosbags
    release moves them, the plain writer is used and only these two fields differ.
    """
    import yaml
    from rosbags.rosbag2 import StoragePlugin, Writer

    def with_distro(text: str, key: str | None) -> str:
        data = yaml.safe_load(text)
        (data[key] if key else data)["ros_distro"] = ros_distro()
        return yaml.safe_dump(data, default_flow_style=False, sort_keys=False)

    try:
        from io import BytesIO

        from rosbags.rosbag2.storage_mcap import Channel, McapWriter, write_channel, write_string
    except ImportError:                                    # pragma: no cover - other rosbags layout
        McapWriter = None

    plugins = dict(Writer.STORAGE_PLUGINS)
    if McapWriter is not None:
        class _McapWriter(McapWriter):
            def add_connection(self, connection, offered_qos_profiles: str) -> None:
                meta = BytesIO()
                write_string(meta, "offered_qos_profiles")
                write_string(meta, offered_qos_profiles)
                write_string(meta, "topic_type_hash")
                write_string(meta, connection.digest or "")
                self.channels.append(Channel(connection.id, connection.msgtype, connection.topic,
                                             connection.ext.serialization_format, meta.getvalue()))
                self.channel_stats[connection.id] = 0
                write_channel(self.chunk.bio, self.channels[-1], self.schemas)
        plugins[StoragePlugin.MCAP] = _McapWriter

    class BagWriter(Writer):
        STORAGE_PLUGINS = plugins

        def close(self) -> None:
            storage = self.storage
            close_storage = storage.close
            storage.close = lambda version, metadata: close_storage(version, with_distro(metadata, None))
            super().close()
            tmp = self.metapath.with_suffix(".yaml.tmp")
            tmp.write_text(with_distro(self.metapath.read_text(), "rosbag2_bagfile_information"))
            tmp.replace(self.metapath)

    return BagWriter


class Recorder:
    """Subscribes (raw) to topics on ``node`` and writes them to a bag. Call :meth:`close` to finish."""

    def __init__(self, node, out: Path, topics: list[str], storage: str = "mcap", wait_s: float = 10.0,
                 overwrite: bool = False):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from rosbags.rosbag2 import StoragePlugin
        from rosbags.typesys import Stores, get_typestore

        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise FileExistsError(f"{self.out} exists; pass --overwrite to replace it")
        if not self.out.parent.exists():
            raise FileNotFoundError(f"output folder {self.out.parent} does not exist")
        self.partial = self.out.with_name(self.out.name + ".partial")
        if self.partial.exists():
            shutil.rmtree(self.partial)
        self.partial.mkdir()
        types = self._discover(node, topics, wait_s)
        store = get_typestore(Stores.ROS2_KILTED)
        self._lock = threading.Lock()
        self.counts = {t: 0 for t in types}
        self.writer = _bag_writer_class()(self.partial / self.out.name, version=9,
                             storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
        self.writer.open()
        self._subs = []
        for topic, msgtype in types.items():
            infos = node.get_publishers_info_by_topic(topic)
            transient = any(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
            best_effort = all(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
            conn = self.writer.add_connection(topic, msgtype, typestore=store,
                                              offered_qos_profiles=offered_qos(infos))
            qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT if best_effort
                             else ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE)
            cls = message_class(msgtype)
            self._subs.append(node.create_subscription(
                cls, topic, lambda raw, info, c=conn, t=topic: self._write(c, t, raw, info), qos, raw=True))
        self.closed = False

    @staticmethod
    def _discover(node, topics: list[str], wait_s: float) -> dict[str, str]:
        """topic -> type, waiting for publishers; topics that never appear are skipped with a warning."""
        want = {t if t.startswith("/") else "/" + t for t in topics}
        found: dict[str, str] = {}
        end = time.monotonic() + wait_s
        while True:
            for name, types in node.get_topic_names_and_types():
                if name in want and name not in found and types:
                    found[name] = types[0]
            if len(found) == len(want) or time.monotonic() >= end:
                break
            time.sleep(0.1)
        for t in sorted(want - set(found)):
            log.warning("topic %s did not appear within %.0f s: not recorded", t, wait_s)
        if not found:
            raise RuntimeError(f"none of the topics {sorted(want)} is being published")
        return found

    def _write(self, conn, topic: str, raw: bytes, info: dict) -> None:
        # The middleware's receive time, like rosbag2: not the moment Python got round to the callback.
        stamp = int(info.get("received_timestamp") or time.time_ns())
        with self._lock:
            if self.closed:
                return
            self.writer.write(conn, stamp, bytes(raw))
            self.counts[topic] += 1

    def close(self) -> Path:
        """Finish the bag and move it into place."""
        with self._lock:
            if self.closed:
                return self.out
            self.closed = True
            self.writer.close()
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.partial / self.out.name, self.out)
        shutil.rmtree(self.partial, ignore_errors=True)
        return self.out


def main(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from .domain import exit_if_invalid_domain_id
    exit_if_invalid_domain_id("mono-depth record")
    logging.basicConfig(level=logging.INFO, format="[record] %(message)s")
    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = rclpy.create_node("mono_depth_record")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        rec = Recorder(node, args.out, args.topics, args.storage, args.wait, args.overwrite)
    except (FileExistsError, FileNotFoundError, RuntimeError) as exc:
        print(f"mono-depth record: error: {exc}", file=sys.stderr)
        node.destroy_node()
        rclpy.try_shutdown()
        return 2
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    print(f"recording {', '.join(rec.counts)} -> {args.out} (Ctrl-C to stop)")
    end = time.monotonic() + args.duration if args.duration > 0 else float("inf")
    try:
        while not stop.is_set() and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.1)
    finally:
        path = rec.close()
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    print(f"wrote {path}: " + ", ".join(f"{t} {n}" for t, n in rec.counts.items()))
    return 0
