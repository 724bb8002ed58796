"""Online self-supervised adaptation (no rclpy).

The rooms: :mod:`.session` (one session driven by the node and by ``mono-depth adapt``: messages,
frames, pacing, extrinsics), :mod:`.engine` (the learner), assembled from :mod:`.triplets`,
:mod:`.replay`, :mod:`.terms` (the loss), :mod:`.guard` and :mod:`.serving`; :mod:`.persistence`
(checkpoints) and :mod:`.anchors` (source-domain images).
"""
from .engine import AdaptationEngine, AdaptConfig, StepReport
from .guard import Verdict
from .persistence import CheckpointStore
from .replay import ReplayBuffer
from .triplets import Triplet

__all__ = ["AdaptationEngine", "AdaptConfig", "ReplayBuffer", "StepReport", "Triplet", "CheckpointStore", "Verdict"]
