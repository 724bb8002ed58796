"""``mono-depth bench``: our network against the ones users would otherwise pick, in one run.

Same process, same input size, same thread setting for every network:

1. this CPU's fp32 peak (a large matmul), for the "fraction of peak" column;
2. per network: parameters, FLOPs, eval latency (median, p95), batched throughput, one
   adaptation step (forward + monodepth2 loss with two source frames + backward + Adam);
3. ways of running our network (eager, channels_last, torchscript, torch.compile, ONNX Runtime);
4. point cloud build for one frame, with and without voxel downsampling;
5. end-to-end latency through DDS at 10 Hz with adaptation on, and the rate at 30 Hz input
   (:mod:`mono_depth_ros.tools.e2e_bench`).

``--quick`` runs every part with few repetitions and seconds-long DDS segments: it checks the
harness (CI), not the timings. Results: Markdown on stdout and, with ``--out DIR``,
``DIR/bench.md`` and ``DIR/bench.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

__all__ = ["add_arguments", "main"]

OURS = "default (ours)"
RESNET = "monodepth2 ResNet-18"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="CI mode: few repetitions, short DDS run (checks the "
                   "harness, not the timings)")
    p.add_argument("--size", help="input WxH for every network (default: 640x192; 320x96 with --quick)")
    p.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime threads for every measurement")
    p.add_argument("--runs", type=int, default=50, help="timed inference runs per network")
    p.add_argument("--train-runs", type=int, default=5, help="timed adaptation steps per network")
    p.add_argument("--networks", nargs="+", help="subset of the networks, quoted names as in the table, e.g. "
                   "'default (ours)' 'monodepth2 ResNet-18' (default: all)")
    p.add_argument("--skip", nargs="+", default=[], choices=["node-step", "variants", "compile", "cloud", "e2e"],
                   help="parts to leave out")
    p.add_argument("--bag", type=Path, help="drive for the DDS part (camera, odom, tf); default: render one")
    p.add_argument("--out", type=Path, help="write bench.md and bench.json here")


def machine_description() -> dict:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    try:
        import onnxruntime
        ort = onnxruntime.__version__
    except ImportError:
        ort = "not installed"
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)),
            "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1),
            "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": ort,
            "os": platform.platform(), "load_avg_1min_at_start": round(load, 2)}


def _progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _pack_cloud():
    """The node's PointCloud2 packing when rclpy is there, else None (then the cloud is built, not packed)."""
    try:
        from std_msgs.msg import Header

        from mono_depth_ros.ros.conversions import points_to_cloud
    except ImportError:
        return None, False
    header = Header()
    header.frame_id = "odom"
    return (lambda pts, col: points_to_cloud(pts, col, header)), True


def run(args) -> dict:
    import torch

    from . import core
    from .variants import VARIANTS, run_variant

    size = args.size or ("320x96" if args.quick else "640x192")
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size {size}: expected WxH, e.g. 640x192") from None
    if w <= 0 or h <= 0:  # each network's size_multiple is checked when it is built
        raise SystemExit(f"--size {size}: width and height must be positive")
    if args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    runs = 3 if args.quick else args.runs
    train_runs = 1 if args.quick else args.train_runs
    torch.set_num_threads(args.threads)
    res: dict = {"command": "mono-depth bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else
                                                             sys.argv[1:]),
                 "size": [w, h], "threads": args.threads, "quick": args.quick, "machine": machine_description()}
    _progress(f"peak: {args.threads}-thread fp32 GEMMs")
    res["peak"] = core.peak_gflops(1024 if args.quick else 2048, 3 if args.quick else 10)
    res["peak_gflops"] = res["peak"]["peak"]

    names = args.networks or list(core.NETWORKS)
    unknown = [n for n in names if n not in core.NETWORKS]
    if unknown:
        raise SystemExit(f"--networks: unknown {unknown}; choose from: " + ", ".join(repr(n) for n in core.NETWORKS))
    x = torch.rand(1, 3, h, w)
    nets, calls = {}, {}
    keep = []  # networks and runners stay alive for the interleaved timing
    for name in names:
        _progress(f"network: {name}: FLOPs, throughput, adaptation step, ONNX export")
        torch.manual_seed(0)
        net = core.build_network(name).eval()
        mult = type(net).size_multiple
        if h % mult or w % mult:
            raise SystemExit(f"--size {w}x{h}: network {name!r} needs multiples of {mult}")
        flops = core.count_flops(net, x)
        thr = core.throughput(net, h, w, batch=2 if args.quick else 8, runs=1 if args.quick else 3)
        ort_err = ""
        try:
            from mono_depth_ros.inference import OnnxRunner
            runner = OnnxRunner(net, x, args.threads)
            calls[(name, "onnxruntime")] = (lambda r=runner: r(x))
            keep.append(runner)
        except Exception as exc:  # a network the exporter or ONNX Runtime cannot take: reported, not fatal
            ort_err = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        step = core.adaptation_step(net, h, w, train_runs)
        net.eval()

        def eager(n=net):
            with torch.inference_mode():
                return n(x)
        calls[(name, "eager")] = eager
        keep.append(net)
        nets[name] = {"params_m": sum(p.numel() for p in net.parameters()) / 1e6, "gflops": flops / 1e9,
                      "throughput_fps": thr, "adapt_step": step.as_dict(), "onnxruntime_error": ort_err}
    rounds = 1 if args.quick else 5
    _progress(f"latency of every network, eager and ONNX Runtime, {rounds} interleaved rounds")
    timed = core.interleaved(calls, runs, rounds)
    for name, r in nets.items():
        lat = timed[(name, "eager")]
        r["latency"] = lat.as_dict()
        o = timed.get((name, "onnxruntime"))
        r["onnxruntime_latency"] = o.as_dict() if o else None
        r["peak_fraction"] = r["gflops"] * 1e9 / (lat.median_ms * 1e-3) / (res["peak_gflops"] * 1e9)
    del keep, calls
    res["networks"] = nets

    if "node-step" not in args.skip:
        # The node's adaptation step at its default settings (640x192 frames, 1 thread), and the reference
        # step (release 0.2) timed interleaved with it in this process.
        _progress("the node's adaptation step (fast, default settings) vs the reference step, 1 thread, interleaved")
        torch.set_num_threads(1)
        res["adapt_node_step"] = core.adapt_node_step(runs=4 if args.quick else 30, reference_runs=2 if args.quick
                                                      else 8)
        torch.set_num_threads(args.threads)

    if "variants" not in args.skip:
        from mono_depth_ros import checkpoint as ckpt

        def shipped():
            model, _ = ckpt.load_checkpoint(ckpt.shipped_checkpoint_path())
            return model

        res["variants"] = {}
        for threads in sorted({args.threads, 1}, reverse=True):
            torch.set_num_threads(threads)
            for name in VARIANTS:
                if name.startswith("torch.compile") and (args.quick or "compile" in args.skip):
                    continue  # ~30 s of compilation: not in the harness check
                _progress(f"variant: {name}, {threads} thread(s)")
                t0 = time.perf_counter()
                timing, diff, err = run_variant(name, shipped, x, runs)
                res["variants"][f"{name} | {threads}"] = {
                    "variant": name, "threads": threads, "latency": timing.as_dict() if timing else None,
                    "max_abs_diff_m": diff, "error": err, "setup_s": time.perf_counter() - t0}
        torch.set_num_threads(args.threads)

    if "variants" not in args.skip:
        # The node's adaptation thread: 1 thread, 1 current + 3 replayed triplets per step.
        torch.set_num_threads(1)
        res["train_variants"] = {}
        for fmt in ("contiguous", "channels_last"):
            _progress(f"adaptation step of our network, batch 4, 1 thread, {fmt}")
            torch.manual_seed(0)
            net = core.build_network(OURS)
            if fmt == "channels_last":
                net = net.to(memory_format=torch.channels_last)
            res["train_variants"][fmt] = core.adaptation_step(net, h, w, train_runs, batch=4).as_dict()
        torch.set_num_threads(args.threads)

    if "cloud" not in args.skip:
        pack, packed = _pack_cloud()
        res["cloud"] = {"packed_as_pointcloud2": packed, "cases": []}
        for stride, voxel in ((1, 0.0), (1, 0.2), (2, 0.0), (2, 0.2)):
            _progress(f"cloud: stride {stride}, voxel {voxel} m")
            t, n = core.cloud_build(h, w, 5 if args.quick else 50, stride, voxel, pack)
            res["cloud"]["cases"].append({"stride": stride, "voxel_m": voxel, "points": n, "latency": t.as_dict()})

    if "e2e" not in args.skip:
        try:
            from mono_depth_ros.tools.e2e_bench import PLAN_FULL, PLAN_QUICK, run_e2e
        except ImportError as exc:
            res["e2e"] = {"error": f"ROS 2 (rclpy) not available: {exc}"}
        else:
            plan = PLAN_QUICK if args.quick else PLAN_FULL
            _progress("end-to-end over DDS (node with adaptation on)")
            res["e2e"] = run_e2e(args.bag, plan, args.out / "e2e" if args.out else None, quiet=args.quick)
            # The same drive with adaptation off: what serving costs without learning (issue 17: the
            # fast step must not slow serving; p95 within 10% of inference-only).
            _progress("end-to-end over DDS (node with adaptation off, for comparison)")
            res["e2e_inference_only"] = run_e2e(args.bag, plan, args.out / "e2e_no_adapt" if args.out else None,
                                                quiet=args.quick, node_params={"adapt": False})
    res["machine"]["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    return res


def _f(v, nd=1) -> str:
    return "n/a" if v is None or v != v else f"{v:.{nd}f}"


def markdown(res: dict) -> str:
    m = res["machine"]
    w, h = res["size"]
    out = [f"Command: `{res['command']}`{' (quick mode: harness check, timings not meaningful)' if res['quick'] else ''}",
           "",
           f"Machine: {m['cpu']}, {m['affinity_cpus']} CPUs usable ({m['logical_cpus']} logical), {m['mem_gb']} GB; "
           f"Python {m['python']}, torch {m['torch']}, ONNX Runtime {m['onnxruntime']}; {m['os']}. "
           f"Load average {m['load_avg_1min_at_start']} at start, {m.get('load_avg_1min_at_end', 'n/a')} at end.",
           "",
           f"Input {w}x{h}, batch 1, {res['threads']} threads, eager PyTorch under `inference_mode` for every "
           f"network. Peak: {res['peak_gflops']:.1f} GFLOP/s, the best fp32 GEMM of this run "
           f"(MKL sgemm {res['peak']['mkl_sgemm']:.1f}, oneDNN 1x1-conv GEMM {res['peak']['onednn_gemm']:.1f}).",
           ""]
    nets = res["networks"]
    ours = nets.get(OURS)
    out += ["| network | params | GFLOPs | median ms | p95 ms | x ours (latency) | ONNX Runtime median ms | "
            "x ours (ORT) | frames/s (batch 8) | % of peak | adapt step ms | x ours (step) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in nets.items():
        lr = r["latency"]["median_ms"] / ours["latency"]["median_ms"] if ours else float("nan")
        sr = r["adapt_step"]["median_ms"] / ours["adapt_step"]["median_ms"] if ours else float("nan")
        o, oo = r.get("onnxruntime_latency"), (ours or {}).get("onnxruntime_latency")
        ort = _f(o["median_ms"]) if o else "failed"
        ort_r = _f(o["median_ms"] / oo["median_ms"], 2) if o and oo else "n/a"
        out.append(f"| {name} | {r['params_m']:.2f} M | {r['gflops']:.2f} | {_f(r['latency']['median_ms'])} | "
                   f"{_f(r['latency']['p95_ms'])} | {_f(lr, 2)} | {ort} | {ort_r} | {_f(r['throughput_fps'])} | "
                   f"{_f(100 * r['peak_fraction'])} | {_f(r['adapt_step']['median_ms'])} | {_f(sr, 2)} |")
    out += ["", "Latency columns: eager PyTorch, then the same network exported to ONNX Runtime (what the node serves "
            "with). % of peak: GFLOPs / eager median time / peak. "
            "GFLOPs: `torch.utils.flop_counter` (1 MAC = 2 FLOPs; convolutions, matmuls, attention). "
            "Adapt step: forward + monodepth2 loss (SSIM+L1, min reprojection, auto-mask, smoothness) with two "
            "source frames + backward + Adam, batch 1.", ""]
    if res.get("variants"):
        out += [f"Ways to run our network ({OURS}, shipped weights, {w}x{h}):", "",
                "| variant | threads | median ms | p95 ms | x eager | max abs diff to eager [m] | setup s |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        base = {}
        for r in res["variants"].values():
            if r["variant"] == "eager, inference_mode" and r["latency"]:
                base[r["threads"]] = r["latency"]["median_ms"]
        for r in res["variants"].values():
            lat = r["latency"]
            if lat is None:
                out.append(f"| {r['variant']} | {r['threads']} | failed: {r['error']} | | | | |")
                continue
            ratio = base.get(r["threads"], float("nan")) / lat["median_ms"]
            out.append(f"| {r['variant']} | {r['threads']} | {_f(lat['median_ms'])} | {_f(lat['p95_ms'])} | "
                       f"{_f(ratio, 2)} | {r['max_abs_diff_m']:.1e} | {_f(r['setup_s'])} |")
        out.append("")
    a = res.get("adapt_node_step")
    if a:
        st = a["settings"]
        out += ["The node's adaptation step at its default settings "
                f"({st['train_size'][1]}x{st['train_size'][0]} frames, step `{st['step']}`: random "
                f"{st['crop'][1]}x{st['crop'][0]} crops, {st['scales']} scales {st['scale_mode']}; batch "
                f"{st['batch']} + {st['anchors_per_step']} anchor images, paired verification every "
                f"{st['verify_every']}th step, guards, Adam), 1 thread, timed interleaved with the reference step "
                "(release 0.2's step: whole frames, every scale upsampled, anchors in their own pass):", "",
                "| step | median ms | mean ms | runs | x reference |", "|---|---:|---:|---:|---:|",
                f"| fast (node default) | {_f(a['median_ms'])} | {_f(a['mean_ms'])} | {a['runs']} | "
                f"{_f(a['speedup'], 2)} |",
                f"| reference | {_f(a['reference_median_ms'])} | {_f(a['reference_mean_ms'])} | "
                f"{a['reference_runs']} | 1.00 |", "",
                f"FLOP floor of the fast step: {a['gflop']:.2f} GFLOP (forward + backward, grouped convolutions "
                f"counted correctly, verification pro rata) / {a['peak_conv3x3_1thread_gflops']:.0f} GFLOP/s "
                f"(best 3x3 convolution, 1 thread, this run) = {_f(a['floor_ms'])} ms; the step takes "
                f"{_f(a['floor_ratio'], 2)}x its floor."]
        if a.get("network_alone"):
            na = a["network_alone"]
            out += ["", f"The network's forward+backward alone (the step's {st['batch']} + {st['anchors_per_step']} "
                    f"crops, no loss): {_f(na['median_ms'])} ms, {na['gflop']:.2f} GFLOP, "
                    f"{_f(na['floor_ratio'], 2)}x its own floor: its depthwise and 1x1 convolutions do not run at "
                    "the dense 3x3 rate the floor is defined by."]
        out += [""]
    if res.get("train_variants"):
        tv = res["train_variants"]
        base = tv["contiguous"]["median_ms"]
        out += ["Adaptation step of our network as the node runs it (1 thread, 1 current + 3 replayed triplets):", "",
                "| memory format | median ms | p95 ms | x contiguous |", "|---|---:|---:|---:|"]
        for fmt, t in tv.items():
            out.append(f"| {fmt} | {_f(t['median_ms'])} | {_f(t['p95_ms'])} | {_f(base / t['median_ms'], 2)} |")
        out.append("")
    if res.get("cloud"):
        c = res["cloud"]
        what = "depth -> points (through a transform) + colours + PointCloud2 packing" if c["packed_as_pointcloud2"] \
            else "depth -> points + colours (rclpy missing: no PointCloud2 packing)"
        out += [f"Point cloud of one {w}x{h} frame: {what}:", "",
                "| stride | voxel | points | median ms | p95 ms |", "|---:|---:|---:|---:|---:|"]
        for r in c["cases"]:
            out.append(f"| {r['stride']} | {r['voxel_m'] or 'off'}{' m' if r['voxel_m'] else ''} | {r['points']} | "
                       f"{_f(r['latency']['median_ms'], 2)} | {_f(r['latency']['p95_ms'], 2)} |")
        out.append("")
    e = res.get("e2e")
    if e:
        if "error" in e:
            out += [f"End-to-end: not run ({e['error']})", ""]
        else:
            out += ["End-to-end through DDS, node with adaptation on (3 processes: publisher, node, subscriber; "
                    f"inference backend {e['inference_backend']}); latency = receive time - image header stamp:", "",
                    "| input | frames | output | p50 ms | p95 ms | max ms | dropped | output rate Hz |",
                    "|---|---:|---|---:|---:|---:|---:|---:|"]
            for label, seg in e["segments"].items():
                if label == "warmup":
                    continue
                for kind in ("depth", "points"):
                    s = seg[kind]
                    rate = s["n"] / (seg["published"] / seg["input_hz"]) if seg["input_hz"] else float("nan")
                    out.append(f"| {seg['input_hz']:.0f} Hz | {seg['published']} | {kind} | {_f(s['p50_ms'])} | "
                               f"{_f(s['p95_ms'])} | {_f(s['max_ms'])} | {s['dropped']} | {_f(rate)} |")
            out += ["", f"Adaptation steps during the run: {e['adapt_steps_total']} "
                        f"({_f(e['adapt_steps_per_s_last'], 2)} steps/s at the end).", ""]
            n = res.get("e2e_inference_only")
            if n and "error" not in n:
                out += ["The same drive into a node with adaptation off (inference only), same run:", "",
                        "| input | depth p50 ms | depth p95 ms | depth rate Hz | p95 with adaptation / without |",
                        "|---|---:|---:|---:|---:|"]
                for label, seg in n["segments"].items():
                    if label == "warmup" or label not in e["segments"]:
                        continue
                    on = e["segments"][label]["depth"]
                    out.append(f"| {seg['input_hz']:.0f} Hz | {_f(seg['depth']['p50_ms'])} | "
                               f"{_f(seg['depth']['p95_ms'])} | {_f(seg.get('depth_hz'))} | "
                               f"{_f(on['p95_ms'] / seg['depth']['p95_ms'], 2)} |")
                out.append("")
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    res = run(args)
    md = markdown(res)
    print(md)
    if args.out:
        (args.out / "bench.json").write_text(json.dumps(res, indent=1))
        (args.out / "bench.md").write_text(md + "\n")
        _progress(f"wrote {args.out / 'bench.md'} and {args.out / 'bench.json'}")
    return 0
