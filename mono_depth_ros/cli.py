"""``mono-depth``: the package's command line, one subcommand per tool.

Subcommand modules are imported lazily (torch/open3d load only when needed).
Each module listed in :data:`SUBCOMMANDS` provides::

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def main(args: argparse.Namespace) -> int: ...
"""
from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["SUBCOMMANDS", "main"]

#: name -> (module, one-line help). Ordered as a user meets them.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("mono_depth_ros.tools.synth.cli", "render a synthetic drive with exact ground truth into a rosbag2"),
    "train": ("mono_depth_ros.learning.train_cli", "train a depth network offline from rosbags"),
    "evaluate": ("mono_depth_ros.learning.evaluate_cli", "evaluate a checkpoint on a bag with ground-truth depth"),
    "egomotion-eval": ("mono_depth_ros.egomotion.cli", "relative-pose accuracy of each ego-motion source on a bag"),
    "adapt": ("mono_depth_ros.adapt.offline", "adapt a checkpoint on a bag with the node's engine, faster than real time"),
    "replay": ("mono_depth_ros.ros.replay", "publish a bag onto its topics with recorded timing and /clock"),
    "record": ("mono_depth_ros.ros.record", "record chosen topics to a rosbag2 (mcap/sqlite3) with rosbags"),
    "demo": ("mono_depth_ros.tools.demo", "the main job: synthetic drive -> depth node over DDS -> pictures and metrics"),
    "export": ("mono_depth_ros.export", "export any backend to ONNX (fixed/dynamic shapes, fp16), checked against eager"),
    "bench": ("mono_depth_ros.tools.bench.cli", "speed against peer networks, this CPU's peak, cloud build and DDS latency"),
}


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _top_parser() -> argparse.ArgumentParser:
    lines = [f"  {name:<16} {desc}" for name, (_, desc) in SUBCOMMANDS.items()]
    return argparse.ArgumentParser(
        prog="mono-depth",
        description="Monocular metric depth for ROS 2: tools.\n\nsubcommands:\n" + "\n".join(lines)
        + "\n\nRun 'mono-depth SUBCOMMAND --help' for each one's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="mono-depth SUBCOMMAND [options]",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        top.error(f"unknown subcommand {name!r}; choose one of: {', '.join(SUBCOMMANDS)}")
    module_name, desc = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"mono-depth {name}", description=desc, formatter_class=_Formatter)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        print(f"mono-depth {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
