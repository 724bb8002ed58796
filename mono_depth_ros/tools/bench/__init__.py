"""Benchmarks of issue #8: ``mono-depth bench`` (:mod:`mono_depth_ros.tools.bench.cli`)."""
