"""`mono-depth train` with the adaptation engine's options (issue 16 item 4): learned intrinsics and moving
objects, through the engine's own pieces (learning/extras.py), saved in the checkpoint and resumed."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from mono_depth_ros.checkpoint import read_checkpoint
from mono_depth_ros.cli import main as cli_main
from mono_depth_ros.conventions import Topics
from mono_depth_ros.learning.data import load_bag
from mono_depth_ros.learning.extras import flip_K

torch.set_num_threads(1)
W, H = 192, 64
FOCAL_ERROR = 0.2          # the start: fx, fy +20 %
SENSORS = "camera,odom,tf,tf_static"


def rewrite_bag(src, dst, edit):
    """A copy of the bag ``src`` at ``dst`` with ``edit(topic, msg)`` applied to every message (None: left out;
    messages it returns unchanged are copied byte for byte)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from mono_depth_ros.bagio import open_reader
    ts = get_typestore(Stores.ROS2_KILTED)
    with open_reader(src) as r, Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {}
        for c, t, raw in r.messages():
            msg = r.deserialize(raw, c.msgtype)
            new = edit(c.topic, msg)
            if new is None:
                continue
            if c.id not in conns:
                conns[c.id] = w.add_connection(c.topic, c.msgtype, typestore=ts)
            w.write(conns[c.id], t, raw if new is msg else ts.serialize_cdr(new, c.msgtype))
    return dst


def perturb_camera_info(src, dst, scale: float):
    """``src`` with fx, fy (K and P) of its camera_info times ``scale``: a camera calibrated wrong."""
    def edit(topic, m):
        if topic != Topics.BAG_CAMERA_INFO:
            return m
        k, p = np.array(m.k, dtype=np.float64), np.array(m.p, dtype=np.float64)
        k[[0, 4]] *= scale
        p[[0, 5]] *= scale
        return dataclasses.replace(m, k=k, p=p)
    return rewrite_bag(src, dst, edit)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    """6 s of domain B (bumps and pitch make the focal length observable: test_intrinsics.py) with its ground
    truth depth, the same drive with fx, fy +20 % in its camera_info, and 3 s of dense traffic."""
    from mono_depth_ros.tools.synth import generate_bag
    root = tmp_path_factory.mktemp("train_options")
    true = generate_bag(root / "drive_B", preset="B", seed=201, duration_s=6.0, width=W, height=H, progress=False,
                        contact_sheet=False, sensors=SENSORS + ",depth_gt", workers=1)
    traffic = generate_bag(root / "traffic", preset="B", seed=31, duration_s=3.0, width=W, height=H,
                           progress=False, contact_sheet=False, sensors=SENSORS, workers=1, traffic="dense")
    return {"true": true, "wrong": perturb_camera_info(true, root / "drive_B_wrong_K", 1 + FOCAL_ERROR),
            "traffic": traffic}


def _common(out, *extra):
    return ["train", "--out", str(out), "--size", f"{W}x{H}", "--threads", "1", "--quiet", "--val-every", "0",
            *extra]


def _report(ck):
    return json.loads((ck.parent / "report.json").read_text())


def test_flip_K_mirrors_the_principal_point_and_is_its_own_inverse():
    K = torch.tensor([[[100.0, 0.5, 40.0], [0, 90.0, 20.0], [0, 0, 1]]]).repeat(2, 1, 1)
    flip = torch.tensor([True, False])
    out = flip_K(K, flip, 192)
    assert out[0].tolist() == [[100.0, -0.5, 151.0], [0, 90.0, 20.0], [0, 0, 1]] and torch.equal(out[1], K[1])
    assert torch.equal(flip_K(out, flip, 192), K)


def test_extras_loss_is_the_trainers_loss_with_the_learned_K():
    """The terms equal the trainer's SelfSupervisedLoss with the field at zero; with a learned correction they
    are that loss with the corrected K, mirrored rows corrected in the unmirrored image (what training and
    validation both call)."""
    from mono_depth_ros.learning.extras import TrainExtras
    from mono_depth_ros.losses import SelfSupervisedLoss
    from mono_depth_ros.models import build_model
    torch.manual_seed(0)
    model = build_model("default").eval()
    B = 2
    tgt, src0, src1 = (torch.rand(B, 3, H, W) for _ in range(3))
    T = [torch.eye(4).repeat(B, 1, 1) for _ in range(2)]
    T[0][:, 2, 3], T[1][:, 2, 3] = 0.4, -0.4
    K0 = torch.tensor([[80.0, 0, 95.5], [0, 80.0, 31.5], [0, 0, 1]])
    flip = torch.tensor([True, False])
    K = flip_K(K0.repeat(B, 1, 1), flip, W)                      # the sampler's K of a mirrored first row
    ref = SelfSupervisedLoss(model.min_depth, model.max_depth, 1e-3)
    ex = TrainExtras(model, True, 5, "refine", 1e-3, lambda: 0)
    with torch.no_grad():
        disps = model.predict_disps(tgt)
        want = ref(tgt, [src0, src1], T, K, disps)[0]
        got = ex.loss(model.predict_disps, tgt, [src0, src1], T, K, flip)[0]
        assert float(got) == pytest.approx(float(want), rel=1e-5)
        ex.intrinsics.log_f.fill_(0.1)
        ex.intrinsics.c.copy_(torch.tensor([0.02, -0.01]))
        Kc = ex.intrinsics.correct(K0[None], W, H)[0]
        assert float(Kc[0, 2]) == pytest.approx(95.5 + 0.02 * W)
        K_learned = flip_K(Kc.repeat(B, 1, 1), flip, W)           # mirrored row: cx = W - 1 - (cx0 + c W)
        want = ref(tgt, [src0, src1], T, K_learned, disps)[0]
        got = ex.loss(model.predict_disps, tgt, [src0, src1], T, K, flip)[0]
        assert float(got) == pytest.approx(float(want), rel=1e-5)
        assert float(got) != pytest.approx(float(ref(tgt, [src0, src1], T, ex.intrinsics.correct(K, W, H),
                                                     disps)[0]), rel=1e-4)   # a naive correction differs


def test_refine_moves_a_wrong_focal_length_toward_the_truth_and_off_leaves_K_alone(bags, tmp_path):
    """fx, fy +20 % in the camera_info; a network that knows the drive's depth (a short supervised run on its
    ground truth), then self-supervised training with ego-motion poses and ``--intrinsics refine``."""
    K_true = load_bag(bags["true"], (H, W)).K
    K_wrong = load_bag(bags["wrong"], (H, W)).K
    assert K_wrong[0, 0] == pytest.approx((1 + FOCAL_ERROR) * K_true[0, 0]) and K_wrong[0, 2] == K_true[0, 2]
    sup = tmp_path / "sup" / "ck.pt"
    assert cli_main(_common(sup, "--mode", "supervised", "--bag", str(bags["true"]), "--steps", "80",
                            "--batch-size", "4", "--lr", "2e-3", "--min-lr", "2e-3")) == 0
    assert _report(sup)["step_outcomes"]["ok"] == 80          # the sky's +inf depth is no bad input
    ss = ["--mode", "self-supervised", "--bag", str(bags["wrong"]), "--init", str(sup), "--batch-size", "4",
          "--lr", "1e-4", "--min-lr", "1e-4"]
    ck = tmp_path / "refine" / "ck.pt"
    assert cli_main(_common(ck, *ss, "--steps", "150", "--intrinsics", "refine", "--intrinsics-lr", "5e-3",
                             "--intrinsics-focal-warmup", "0")) == 0
    rep = _report(ck)["intrinsics"]
    assert rep["seen"]["fx"] == pytest.approx(K_wrong[0, 0]) and rep["image_size"] == [W, H]
    fx_err = rep["learned"]["fx"] / K_true[0, 0] - 1
    cx_err = (rep["learned"]["cx"] - K_true[0, 2]) / W
    # Measured (seed 201, 150 steps at 192x64): fx +20 % -> +13.1 %, cx stays within 0.2 % of the width.
    assert fx_err < FOCAL_ERROR - 0.04, rep
    assert abs(cx_err) < 0.02, rep
    assert rep["learned"]["fx"] / rep["learned"]["fy"] == pytest.approx(K_wrong[0, 0] / K_wrong[1, 1])
    # The checkpoint: the correction (for --resume), the same report, and the learned K as its camera.
    c = read_checkpoint(ck)
    assert set(c["meta"]["learned"]) == {"intrinsics"} and c["meta"]["intrinsics"] == rep
    assert c["canonical_camera"]["fx"] == pytest.approx(rep["learned"]["fx"], rel=1e-6)
    assert f"fx {K_wrong[0, 0]:.2f} -> {rep['learned']['fx']:.2f}" in (ck.parent / "report.md").read_text()
    # off: the camera_info's K as it is, nothing learned.
    off = tmp_path / "off" / "ck.pt"
    assert cli_main(_common(off, *ss, "--steps", "3")) == 0
    c = read_checkpoint(off)
    assert _report(off)["intrinsics"] is None and "learned" not in c["meta"]
    assert c["canonical_camera"]["fx"] == pytest.approx(K_wrong[0, 0]) and c["canonical_camera"]["cx"] == K_wrong[0, 2]


def test_estimate_starts_from_the_field_of_view_without_camera_info(bags, tmp_path):
    from mono_depth_ros.adapt.intrinsics import K_from_hfov
    from mono_depth_ros.tools.synth import generate_bag
    bag = generate_bag(tmp_path / "no_info", preset="B", seed=5, duration_s=2.0, width=W, height=H,
                       progress=False, contact_sheet=False, sensors="camera,odom,tf,tf_static", workers=1)
    stripped = rewrite_bag(bag, tmp_path / "stripped",
                           lambda topic, m: None if topic == Topics.BAG_CAMERA_INFO else m)
    ck = tmp_path / "est" / "ck.pt"
    args = ["--mode", "self-supervised", "--bag", str(stripped), "--steps", "2", "--batch-size", "2"]
    assert cli_main(_common(ck, *args)) == 2                     # no camera_info: refine and off need one
    assert cli_main(_common(ck, *args, "--intrinsics", "estimate", "--camera-hfov-deg", "70",
                            "--intrinsics-focal-warmup", "100")) == 0
    rep = _report(ck)["intrinsics"]
    guess = K_from_hfov(W, H, 70.0)
    assert rep["seen"]["fx"] == pytest.approx(guess[0, 0]) and rep["seen"]["cx"] == pytest.approx(guess[0, 2])
    # The focal warm-up holds f (2 of its 100 steps taken); the principal point learns from the start.
    assert rep["learned"]["fx"] == pytest.approx(rep["seen"]["fx"], rel=1e-6) and rep["focal_change_pct"] == [0, 0]
    assert rep["learned"]["cx"] != rep["seen"]["cx"] and rep["learned"]["cy"] != rep["seen"]["cy"]


def _motion_state(ck) -> dict:
    return read_checkpoint(ck)["meta"]["learned"]["object_motion"]


def test_object_motion_schedule_checkpoint_and_bit_identical_resume(bags, tmp_path):
    """``--object-motion --object-motion-after-steps 2``: the motion net is untouched for 2 steps, then learns;
    its state (and the learned intrinsics) is in the checkpoint, and --resume continues it exactly as one run."""
    N = 2
    opts = ["--mode", "self-supervised", "--bag", str(bags["traffic"]), "--batch-size", "2", "--lr", "1e-3",
            "--min-lr", "1e-3", "--save-every", "0", "--object-motion", "--object-motion-after-steps", str(N),
            "--intrinsics", "refine"]
    straight = tmp_path / "straight" / "ck.pt"
    assert cli_main(_common(straight, *opts, "--steps", str(N + 2))) == 0
    ck = tmp_path / "resumed" / "ck.pt"
    assert cli_main(_common(ck, *opts, "--steps", "1")) == 0
    one = _motion_state(ck)
    assert cli_main(_common(ck, *opts, "--steps", str(N), "--resume")) == 0
    before = _motion_state(ck)
    # Untouched while off: the same after steps 1 and N, the output layer still at its zero start.
    assert all(torch.equal(one[k], before[k]) for k in one)
    assert float(before["head.weight"].abs().max()) == 0 and float(before["head.bias"].abs().max()) == 0
    assert read_checkpoint(ck)["meta"]["object_motion"] == {"after_steps": N, "active": True}
    assert cli_main(_common(ck, *opts, "--steps", str(N + 2), "--resume")) == 0
    after = _motion_state(ck)
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert "head.weight" in changed and len(changed) >= len(after) // 2, changed
    rep = _report(ck)
    assert (rep["start_step"], rep["end_step"]) == (N, N + 2) and rep["object_motion"]["active"]
    # Two resumes give the uninterrupted run's weights, motion net and intrinsics bit for bit.
    a, b = read_checkpoint(straight), read_checkpoint(ck)
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())
    for part in ("object_motion", "intrinsics"):
        sa, sb = a["meta"]["learned"][part], b["meta"]["learned"][part]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), part
    assert float(a["meta"]["learned"]["intrinsics"]["c"].abs().max()) > 0       # the intrinsics did learn
    # A resume with other options is a clear error (the optimizer holds other parameter groups).
    assert cli_main(_common(ck, *opts[:-5], "--steps", str(N + 3), "--resume")) == 2


def test_options_need_self_supervised_training(bags, tmp_path, capsys):
    base = _common(tmp_path / "x.pt", "--bag", str(bags["true"]), "--steps", "1")
    assert cli_main(base + ["--object-motion"]) == 2
    assert "--object-motion and --intrinsics need --mode self-supervised" in capsys.readouterr().out
    assert cli_main(base + ["--mode", "self-supervised", "--object-motion-after-steps", "-1"]) == 2
    assert "--object-motion-after-steps" in capsys.readouterr().out
