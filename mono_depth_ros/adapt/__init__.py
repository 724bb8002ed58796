"""Online self-supervised adaptation (no rclpy): engine, replay buffer, guard, persistence."""
from .engine import AdaptationEngine, AdaptConfig, ReplayBuffer, StepReport, Triplet
from .persistence import CheckpointStore

__all__ = ["AdaptationEngine", "AdaptConfig", "ReplayBuffer", "StepReport", "Triplet", "CheckpointStore"]
