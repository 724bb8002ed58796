"""``mono-depth export``: any backend to ONNX (fixed or dynamic shapes, optional fp16), checked
against eager PyTorch with ONNX Runtime.

The graph is the network's eval-mode forward: ``image`` (B,3,H,W) float RGB in [0,1] ->
``depth`` (B,1,H,W) in the network's output units (metres for metric backends; see
``output_kind``). The canonical-camera conversion is NOT in the graph (it depends on the camera):
multiply by ``f_real / f_canonical`` (and align the principal point) as
:func:`mono_depth_ros.canonical.run_canonical` does; the model's metadata_props carry
``arch``, ``output_kind``, ``input_size`` and ``canonical_camera`` (JSON).

Tolerances (:data:`TOLERANCE`), checked on a random image at the export size (and, with
``--dynamic``, at a second size): fp32: max relative error <= 1e-4; fp16 (weights and compute
in half precision): 99th percentile of the relative error <= 1e-2.

TensorRT (not needed here; printed by ``--help``)::

    trtexec --onnx=depth.onnx --saveEngine=depth.plan --fp16 \\
        --minShapes=image:1x3x192x640 --optShapes=image:1x3x192x640 --maxShapes=image:4x3x384x1280
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .models.base import DepthNet, DepthOutput

__all__ = ["TOLERANCE", "export_onnx", "check_onnx", "trtexec_command", "add_arguments", "main"]

#: fp32: max relative error; fp16: 99th percentile of the relative error (ONNX Runtime vs eager fp32).
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}

TRTEXEC = ("trtexec --onnx=depth.onnx --saveEngine=depth.plan --fp16 "
           "--minShapes=image:1x3x192x640 --optShapes=image:1x3x192x640 --maxShapes=image:4x3x384x1280")


def export_onnx(model: DepthNet, out: str | Path, input_size: tuple[int, int], dynamic: bool = False,
                fp16: bool = False, opset: int = 17, metadata: dict[str, Any] | None = None) -> Path:
    """Export ``model.predict_depth`` (eval mode; (1,3,H,W) "image" -> (1,1,H,W) "depth") to ``out``.

    Args:
        input_size: (H, W) of the example input (multiples of the model's ``size_multiple``).
        dynamic: batch, height and width dynamic. Depth Anything V2 bakes its interpolated
            position embeddings into the graph, so only its batch is dynamic.
        fp16: weights, input and output in half precision.
        metadata: extra metadata_props (values are JSON-encoded unless str).
    Returns:
        the path written.
    """
    import onnx

    mult = type(model).size_multiple
    h, w = int(input_size[0]), int(input_size[1])
    if h % mult or w % mult or h <= 0 or w <= 0:
        raise ValueError(f"export size {w}x{h} must be positive multiples of {mult} for {model.arch}")
    net = DepthOutput(copy.deepcopy(model).eval())
    x = torch.rand(1, 3, h, w)
    if fp16:
        net, x = net.half(), x.half()
    axes = None
    if dynamic:
        spatial = mult != 14  # ViT position embeddings are interpolated at export time
        axes = {"image": {0: "batch", **({2: "height", 3: "width"} if spatial else {})},
                "depth": {0: "batch", **({2: "height", 3: "width"} if spatial else {})}}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), buf, input_names=["image"], output_names=["depth"], dynamo=False,
                          opset_version=opset, dynamic_axes=axes)
    proto = onnx.load_from_string(buf.getvalue())
    meta = {"arch": model.arch, "output_kind": model.output_kind,
            "input_size": [h, w], "precision": "fp16" if fp16 else "fp32", **(metadata or {})}
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v if isinstance(v, str) else json.dumps(v)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))
    return out


def check_onnx(path: str | Path, model: DepthNet, input_size: tuple[int, int], fp16: bool = False,
               seed: int = 0) -> dict[str, float]:
    """Run ``path`` in ONNX Runtime (CPU) and eager fp32 ``model`` on one random (1,3,H,W) image.

    Returns:
        {"max_rel": ..., "p99_rel": ..., "median_rel": ..., "ok": 1.0 or 0.0} against :data:`TOLERANCE`.
    """
    import onnxruntime as ort

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, int(input_size[0]), int(input_size[1]), generator=g)
    model = model.eval()
    with torch.no_grad():
        ref = model.predict_depth(x).float().numpy()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = x.half().numpy() if fp16 else x.numpy()
    out = sess.run(None, {"image": feed})[0].astype(np.float32)
    rel = np.abs(out - ref) / np.maximum(np.abs(ref), 1e-6)
    res = {"max_rel": float(rel.max()), "p99_rel": float(np.percentile(rel, 99)), "median_rel": float(np.median(rel))}
    res["ok"] = float(res["p99_rel"] <= TOLERANCE["fp16"] if fp16 else res["max_rel"] <= TOLERANCE["fp32"])
    return res


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .models import MODEL_CHOICES

    parser.epilog = "TensorRT: " + TRTEXEC
    parser.add_argument("--onnx", required=True, type=Path, metavar="OUT", help="ONNX file to write")
    parser.add_argument("--model", choices=MODEL_CHOICES, default="default",
                        help="architecture, where the file cannot tell (Depth Anything V2 relative or metric)")
    parser.add_argument("--checkpoint", default="",
                        help="weights: a checkpoint, a monodepth2 folder, a Depth Anything V2 .pth or transformers "
                             "folder (default: the shipped default_A.pt)")
    parser.add_argument("--size", default=None, metavar="WxH",
                        help="export input size (default: the weights' training input size)")
    parser.add_argument("--dynamic", action="store_true",
                        help="dynamic batch, height and width (Depth Anything V2: batch only)")
    parser.add_argument("--fp16", action="store_true", help="half-precision weights, input and output")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip the ONNX Runtime vs eager check")


def main(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError, load_model, shipped_checkpoint_path

    path = args.checkpoint or shipped_checkpoint_path()
    try:
        model, info = load_model(args.model, path)
    except CheckpointError as exc:
        print(f"mono-depth export: {exc}", file=sys.stderr)
        return 1
    size = tuple(info["input_size"])
    if args.size:
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            print(f"mono-depth export: --size must be WxH, got {args.size!r}", file=sys.stderr)
            return 2
        size = (h, w)
    cam = info.get("canonical_camera")
    meta = {"source": str(path), "canonical_camera": cam.to_dict() if cam is not None else None}
    try:
        out = export_onnx(model, args.onnx, size, args.dynamic, args.fp16, args.opset, meta)
    except ValueError as exc:
        print(f"mono-depth export: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({info['arch']}, {model.output_kind}, input {size[1]}x{size[0]}, "
          f"{'fp16' if args.fp16 else 'fp32'}, {'dynamic' if args.dynamic else 'fixed'} shapes)")
    if args.check:
        sizes = [size]
        mult = type(model).size_multiple
        if args.dynamic and mult != 14:
            sizes.append((size[0] + 2 * mult, size[1] + 2 * mult))
        for s in sizes:
            r = check_onnx(out, model, s, args.fp16)
            tol = TOLERANCE["fp16" if args.fp16 else "fp32"]
            print(f"check {s[1]}x{s[0]}: max rel {r['max_rel']:.2e}, p99 {r['p99_rel']:.2e}, median "
                  f"{r['median_rel']:.2e} ({'p99' if args.fp16 else 'max'} <= {tol:g}: "
                  f"{'ok' if r['ok'] else 'FAILED'})")
            if not r["ok"]:
                return 3
    print("TensorRT: " + trtexec_command(out, size, args.dynamic and type(model).size_multiple != 14))
    return 0


def trtexec_command(onnx_path: str | Path, size: tuple[int, int], dynamic: bool) -> str:
    """The trtexec line that builds a TensorRT engine from this export (text only; not run here)."""
    engine = Path(onnx_path).with_suffix(".plan")
    cmd = f"trtexec --onnx={onnx_path} --saveEngine={engine} --fp16"
    if dynamic:
        h, w = size
        cmd += (f" --minShapes=image:1x3x{h}x{w} --optShapes=image:1x3x{h}x{w}"
                f" --maxShapes=image:4x3x{2 * h}x{2 * w}")
    return cmd
