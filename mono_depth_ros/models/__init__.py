"""Depth networks: ``build_model(name, min_depth, max_depth)``.

Contract (see :mod:`.base`)::

    net = build_model("default", min_depth=0.1, max_depth=100.0)  # or "monodepth2_resnet18"
    net.eval();  depth = net(image)   # (B,3,H,W) in [0,1] -> (B,1,H,W) metres
    net.train(); disps = net(image)   # 4 sigmoid maps, disps[s] is (B,1,H/2^s,W/2^s)
    net.disp_to_depth(sigmoid)
    infer_depth(net, image, input_size)   # any image size: runs at input_size, depth back at (H, W)
"""
from .base import OUTPUT_KINDS, DepthNet, check_image, disp_to_depth, infer_depth
from .default_net import DefaultDepthNet
from .depth_anything import DepthAnythingV2
from .monodepth2 import Monodepth2ResNet18, Monodepth2ResNet50, load_monodepth2, load_monodepth2_folder
from .registry import MODEL_CHOICES, MODEL_NAMES, build_model, load_weights

__all__ = ["DepthNet", "DefaultDepthNet", "Monodepth2ResNet18", "Monodepth2ResNet50", "DepthAnythingV2",
           "MODEL_NAMES", "MODEL_CHOICES", "build_model", "load_weights", "load_monodepth2",
           "load_monodepth2_folder", "disp_to_depth", "check_image", "infer_depth", "OUTPUT_KINDS"]
