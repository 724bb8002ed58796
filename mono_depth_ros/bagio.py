"""Small helpers to read rosbag2/rosbag1 recordings with rosbags (core: no rclpy).

>>> with open_reader("drive_A") as reader:                       # doctest: +SKIP
...     print(reader.topics.keys())
>>> for topic, stamp_ns, msg in iter_messages("drive_A", ["/camera/image_raw"]):   # doctest: +SKIP
...     rgb = msgconv.image_to_rgb(msg)                          # (H,W,3) uint8 (mono_depth_ros.msgconv)

Errors about the bag itself (missing, truncated, corrupt, unreadable metadata)
are raised as :class:`BagError` naming the file; nothing here waits on I/O
that could hang.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

__all__ = ["BagError", "resolve_bag_path", "open_reader", "is_ros1", "ros2_converters", "iter_messages",
           "bag_topics", "bag_custom_data", "synth_info", "is_synthetic"]


class BagError(RuntimeError):
    """A bag that cannot be read (missing, truncated, corrupt); the message names the file."""


def _default_typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def resolve_bag_path(path) -> Path:
    """The path to hand to rosbags for ``path``.

    A rosbag2 directory, its ``metadata.yaml`` or one of the storage files it lists
    -> the directory (its metadata: QoS, custom data); any other ``.mcap`` / ``.db3``
    -> the file itself (a *bare* storage file, how bags are usually shared); a ROS 1
    ``.bag`` -> the file.

    Raises:
        BagError: missing, or a directory without ``metadata.yaml``.
    """
    p = Path(path)
    if p.is_file() and p.name == "metadata.yaml":
        p = p.parent
    elif p.is_file() and p.suffix in (".mcap", ".db3"):
        meta = p.parent / "metadata.yaml"
        if meta.is_file():
            import yaml
            try:
                info = (yaml.safe_load(meta.read_text()) or {}).get("rosbag2_bagfile_information", {})
                listed = {Path(f).name for f in info.get("relative_file_paths", [])}
            except (OSError, yaml.YAMLError, AttributeError):
                listed = set()
            if p.name in listed:
                return p.parent
        return p
    if not p.exists():
        raise BagError(f"bag not found: {p}")
    if p.is_dir() and not (p / "metadata.yaml").exists():
        raise BagError(f"not a complete rosbag2 (no metadata.yaml): {p}"
                       + (" -- looks like an interrupted generation" if p.name.endswith(".partial") else ""))
    return p


@contextlib.contextmanager
def open_reader(path):
    """Open a bag for reading: a rosbag2 directory, a bare ``.mcap`` / ``.db3`` file
    (inside a rosbag2 directory or on its own), or a ROS 1 ``.bag``.

    Yields:
        an open ``rosbags.highlevel.AnyReader`` (falls back to the Kilted typestore
        for bags without embedded message definitions).
    Raises:
        BagError: the bag is missing, truncated or corrupt.
    """
    from rosbags.highlevel import AnyReader

    p = resolve_bag_path(path)
    try:
        reader = AnyReader([p], default_typestore=_default_typestore())
        reader.open()
    except BagError:
        raise
    except Exception as err:                      # rosbags raises several unrelated types
        raise BagError(f"cannot open bag {p}: {type(err).__name__}: {err}") from err
    try:
        yield reader
    finally:
        with contextlib.suppress(Exception):
            reader.close()


def bag_topics(path) -> dict[str, str]:
    """Topic name -> message type of a bag."""
    with open_reader(path) as reader:
        return {c.topic: c.msgtype for c in reader.connections}


def bag_custom_data(path) -> dict[str, str]:
    """The ``custom_data`` key/value strings of a rosbag2's metadata ({} if none).

    For a bare ``.mcap`` file (no ``metadata.yaml``) they are read from the copy rosbag2 (and
    rosbags) embed in the file, the ``rosbag2`` metadata record, with the ``mcap`` reader.
    """
    with open_reader(path) as reader:
        custom = {}
        for r in reader.readers:
            meta = getattr(getattr(r, "storage", r), "metadata", None)   # rosbags 0.11: Reader.storage
            custom.update(getattr(meta, "custom", None) or {})
    p = resolve_bag_path(path)
    if not custom and p.is_file() and p.suffix == ".mcap":
        custom.update(_mcap_embedded_custom_data(p))
    return custom


def _mcap_embedded_custom_data(path: Path) -> dict[str, str]:
    try:
        import yaml
        from mcap.reader import make_reader
    except ImportError:                      # the mcap reader is optional at run time
        return {}
    try:
        with open(path, "rb") as fh:
            for record in make_reader(fh).iter_metadata():
                if record.name == "rosbag2":
                    info = yaml.safe_load(record.metadata.get("serialized_metadata", "")) or {}
                    return dict(info.get("custom_data") or {})
    except Exception:                        # a damaged summary: no custom data, the messages may still read
        return {}
    return {}


def is_synthetic(path) -> bool:
    """Whether ``path`` is a drive written by the package's synthetic generator (its metadata marker)."""
    try:
        return bool(synth_info(path))
    except BagError:
        return False


def synth_info(path) -> dict:
    """Drive description written by the synthetic generator (preset, seed, noise,
    ``T_map_odom``, ``T_base_camera``, geodetic origin...); {} for other bags."""
    import json

    raw = bag_custom_data(path).get("mono_depth_ros.synth")
    return json.loads(raw) if raw else {}


#: ROS 1 message types whose ROS 2 equivalent has another name.
ROS1_TO_ROS2_TYPES = {"tf/msg/tfMessage": "tf2_msgs/msg/TFMessage"}


def is_ros1(reader) -> bool:
    """Whether an open ``AnyReader`` reads ROS 1 bags (payloads are ROS 1 serialised, not CDR)."""
    return not reader.is2


def ros2_converters(reader, connections, dst_typestore=None) -> dict:
    """For the connections of an open ROS 1 ``reader``: ``{conn.id: (ros2_msgtype, to_cdr)}``.

    ``to_cdr(raw)`` turns a ROS 1 payload into the ROS 2 message's little-endian CDR bytes,
    with rosbags' own converter (``rosbags.convert``: same wire layout -> ``ros1_to_cdr``,
    otherwise field-by-field migration; Header's ``seq`` is dropped). A type counts as having
    a ROS 2 equivalent when ``dst_typestore`` (default: Kilted) defines it, under the same
    name or :data:`ROS1_TO_ROS2_TYPES`.

    Raises:
        BagError: naming every topic and ROS 1 type without a ROS 2 equivalent.
    """
    import contextlib
    import io

    from rosbags.convert.converter import generate_message_converter

    dst = dst_typestore or _default_typestore()
    out, refused, cache = {}, [], {}
    for c in connections:
        ros2_type = ROS1_TO_ROS2_TYPES.get(c.msgtype, c.msgtype)
        if ros2_type not in dst.fielddefs:
            refused.append(f"{c.topic} ({c.msgtype})")
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()):      # it prints "will be migrated"
                fn = generate_message_converter(reader.typestore, dst, c.msgtype, ros2_type, cache,
                                                src_is2=False, dst_is2=True)
        except Exception as err:                                 # definitions that cannot be mapped
            refused.append(f"{c.topic} ({c.msgtype}: {type(err).__name__}: {err})")
            continue
        out[c.id] = (ros2_type, lambda raw, fn=fn: bytes(fn(raw)))
    if refused:
        raise BagError("ROS 1 bag: no ROS 2 equivalent for " + ", ".join(refused)
                       + "; leave these topics out with --topics")
    return out


def iter_messages(path, topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, object]]:
    """Deserialized messages ``(topic, log_time_ns, msg)`` in log-time order.

    Messages of a ROS 1 bag come out as their ROS 2 equivalents (field names and all, e.g.
    CameraInfo ``k``, Header without ``seq``; see :func:`ros2_converters`), so every tool reads
    both kinds of bag alike.

    Args:
        path: bag path (see :func:`open_reader`).
        topics: only these topics (None: all). Topics whose type cannot be
            deserialized (or, in a ROS 1 bag, has no ROS 2 equivalent) are skipped with a warning.
    Raises:
        BagError: the bag (or a message in it) is unreadable.
    """
    wanted = None if topics is None else set(topics)
    with open_reader(path) as reader:
        conns, decode = [], {}
        ros1 = is_ros1(reader)
        store = _default_typestore() if ros1 else reader.typestore
        for c in reader.connections:
            if wanted is not None and c.topic not in wanted:
                continue
            if c.msgtype not in reader.typestore.fielddefs:
                warnings.warn(f"{path}: skipping topic {c.topic} of unknown type {c.msgtype}", stacklevel=2)
                continue
            if ros1:
                try:
                    ((ros2_type, to_cdr),) = ros2_converters(reader, [c], store).values()
                except BagError as err:
                    warnings.warn(f"{path}: skipping topic: {err}", stacklevel=2)
                    continue
                decode[c.id] = lambda raw, t=ros2_type, f=to_cdr: store.deserialize_cdr(f(raw), t)
            else:
                decode[c.id] = lambda raw, t=c.msgtype: reader.deserialize(raw, t)
            conns.append(c)
        if not conns:
            return
        try:
            for conn, stamp, raw in reader.messages(connections=conns):
                yield conn.topic, int(stamp), decode[conn.id](raw)
        except BagError:
            raise
        except Exception as err:
            raise BagError(f"error reading bag {path}: {type(err).__name__}: {err}") from err
