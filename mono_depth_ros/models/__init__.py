"""Depth networks: ``build_model(name, min_depth, max_depth)``.

Contract (see :mod:`.base`), the same in train and eval mode::

    net = build_model("default", min_depth=0.1, max_depth=100.0)  # or "monodepth2_resnet18"
    depth = net.predict_depth(image)  # (B,3,H,W) in [0,1] -> (B,1,H,W) metres
    disps = net.predict_disps(image)  # net.num_scales sigmoid maps, disps[s] is (B,1,H/2^s,W/2^s)
    net.disp_to_depth(sigmoid)
    type(net).size_multiple           # H and W must be multiples of it

Frames of any size go through :class:`mono_depth_ros.inference.DepthPredictor` (the node's and
the tools' one inference path).

Imports run one way: base <- networks <- registry <- released (monodepth2 folders).
"""
from .base import OUTPUT_KINDS, DepthNet, DepthOutput, check_image, disp_to_depth, round_to_multiple
from .default_net import DefaultDepthNet
from .depth_anything import DepthAnythingV2
from .monodepth2 import Monodepth2ResNet18, Monodepth2ResNet50
from .registry import MODEL_CHOICES, MODEL_NAMES, build_model, load_weights, network_class, size_multiple_of
from .released import load_monodepth2, load_monodepth2_folder

__all__ = ["DepthNet", "DefaultDepthNet", "Monodepth2ResNet18", "Monodepth2ResNet50", "DepthAnythingV2",
           "MODEL_NAMES", "MODEL_CHOICES", "build_model", "load_weights", "network_class", "size_multiple_of", "load_monodepth2",
           "load_monodepth2_folder", "disp_to_depth", "check_image", "round_to_multiple", "DepthOutput",
           "OUTPUT_KINDS"]
