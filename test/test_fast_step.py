"""The fast adaptation step (issue 17): same loss and gradients as the reference step where they should be,
and every intended difference (crops, native-resolution scales, BatchNorm folding, batched anchors) tested."""
import time

import numpy as np
import pytest
import torch

from mono_depth_ros import losses as L
from mono_depth_ros.geometry import PinholeCamera, warp
from mono_depth_ros.losses import FastSelfSupervisedLoss, SelfSupervisedLoss, photometric_error, photometric_error_fast
from mono_depth_ros.memory import HeapTrimPolicy
from mono_depth_ros.models import build_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def frames():
    """Three consecutive rendered frames (synthetic, exact depth and poses), 64x192."""
    from mono_depth_ros.tools.synth import render_drive
    return list(render_drive("B", seed=3, duration_s=0.25, width=192, height=64))[:3]


def _t(img):
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float() / 255


def _batch(frames):
    """target (1,3,H,W), sources [prev, next], T_source_target, K (1,3,3), GT depth (1,1,H,W)."""
    prev, cur, nxt = frames
    T = [torch.from_numpy((np.linalg.inv(f.T_map_camera) @ cur.T_map_camera).astype(np.float32))[None]
         for f in (prev, nxt)]
    K = torch.from_numpy(cur.K.astype(np.float32))[None]
    depth = torch.from_numpy(np.minimum(cur.depth, 100.0).astype(np.float32))[None, None]
    return _t(cur.image), [_t(prev.image), _t(nxt.image)], T, K, depth


class TestPhotometricFast:
    def test_same_values_and_float64_gradcheck(self):
        torch.manual_seed(0)
        x = torch.rand(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
        y = torch.rand(2, 3, 9, 11, dtype=torch.float64)
        assert torch.allclose(photometric_error_fast(x, y), photometric_error(x, y), atol=1e-12)
        assert torch.autograd.gradcheck(lambda a: photometric_error_fast(a, y), (x,), eps=1e-6, atol=1e-6)

    def test_gradient_equals_autograd_of_the_reference(self):
        torch.manual_seed(1)
        x = torch.rand(2, 3, 32, 48, requires_grad=True)
        y = torch.rand(2, 3, 32, 48)
        g = torch.rand(2, 1, 32, 48)
        photometric_error(x, y).backward(g)
        ref = x.grad.clone()
        x.grad = None
        photometric_error_fast(x, y).backward(g)
        assert torch.allclose(x.grad, ref, atol=1e-6), float((x.grad - ref).abs().max())

    def test_shape_errors_name_the_argument(self):
        with pytest.raises(ValueError, match="target must have shape"):
            photometric_error_fast(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))


class TestFastLossMatchesReference:
    def test_whole_frames_upsampled_same_loss_and_gradients(self, frames, monkeypatch):
        """The fast loss with the reference's settings is the reference loss (auto-mask noise off in both)."""
        target, sources, T, K, _ = _batch(frames)
        target, sources = target.repeat(2, 1, 1, 1), [s.repeat(2, 1, 1, 1) for s in sources]
        T, K = [t.repeat(2, 1, 1) for t in T], K.repeat(2, 1, 1)
        torch.manual_seed(0)
        net = build_model("default").train().freeze_batchnorm(True)
        orig = L.reduce_reprojection
        monkeypatch.setattr(L, "reduce_reprojection", lambda r, i=None, noise=1e-5: orig(r, i, 0.0))

        def run(loss_fn):
            net.zero_grad()
            loss, parts = loss_fn(target, sources, T, K, net.predict_disps(target))
            loss.backward()
            return loss.detach(), parts, torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])

        l_ref, p_ref, g_ref = run(SelfSupervisedLoss(net.min_depth, net.max_depth))
        l_fast, p_fast, g_fast = run(FastSelfSupervisedLoss(net.min_depth, net.max_depth, scale_mode="upsampled",
                                                            noise=0.0))
        assert torch.allclose(l_fast, l_ref, rtol=1e-6), (float(l_fast), float(l_ref))
        for k in ("photometric", "smoothness", "automask_fraction"):
            assert torch.allclose(p_fast[k], p_ref[k], rtol=1e-5, atol=1e-7), k
        assert torch.allclose(g_fast, g_ref, atol=1e-7 + 1e-4 * float(g_ref.abs().max())), \
            float((g_fast - g_ref).abs().max())

    def test_option_errors(self):
        with pytest.raises(ValueError, match="scale_mode"):
            FastSelfSupervisedLoss(scale_mode="bilinear")
        with pytest.raises(ValueError, match="num_scales"):
            FastSelfSupervisedLoss(num_scales=0)


class TestCrops:
    def test_warp_into_a_crop_is_the_crop_of_the_whole_warp(self, frames):
        """A crop's camera is the frame's K with the principal point shifted; the source stays whole."""
        target, sources, T, K, depth = _batch(frames)
        H, W = target.shape[-2:]
        whole, _ = warp(sources[0], depth, T[0], PinholeCamera(K, H, W))
        y0, x0, h, w = 16, 40, 32, 96
        Kc = K.clone()
        Kc[:, 0, 2] -= x0
        Kc[:, 1, 2] -= y0
        crop, _ = warp(sources[0], depth[..., y0:y0 + h, x0:x0 + w], T[0], PinholeCamera(Kc, h, w),
                       PinholeCamera(K, H, W))
        assert torch.allclose(crop, whole[..., y0:y0 + h, x0:x0 + w], atol=1e-5)

    def test_true_depth_explains_a_crop_far_better_than_a_wrong_scale(self, frames):
        """Metric scale is kept by crops: the GT depth beats 0.5x and 2x of it, at every scale mode."""
        target, sources, T, K, depth = _batch(frames)
        y0, x0, h, w = 0, 64, 64, 96
        Kc = K.clone()
        Kc[:, 0, 2] -= x0
        Kc[:, 1, 2] -= y0
        crop = target[..., y0:y0 + h, x0:x0 + w]
        d = depth[..., y0:y0 + h, x0:x0 + w]
        for mode in ("native", "upsampled"):
            loss_fn = FastSelfSupervisedLoss(automask=False, scale_mode=mode, num_scales=1, noise=0.0,
                                             smoothness_weight=0.0)

            def photo(depth_m):
                sig = ((1.0 / depth_m) - 1.0 / loss_fn.max_depth) / (1.0 / loss_fn.min_depth - 1.0 / loss_fn.max_depth)
                return float(loss_fn(crop, sources, T, Kc, [sig], K_source=K)[1]["photometric"])
            good, near, far = photo(d), photo(0.5 * d), photo(2.0 * d)
            assert good < 0.8 * min(near, far), (mode, good, near, far)

    def test_identity_of_a_crop_is_the_source_cropped(self, frames):
        """Auto-masking compares the crop with the *same sensor pixels* of each source."""
        target, sources, T, K, _ = _batch(frames)
        H, W = target.shape[-2:]
        y0, x0, h, w = 32, 32, 32, 64
        Kc = K.clone()
        Kc[:, 0, 2] -= x0
        Kc[:, 1, 2] -= y0
        ident, _ = warp(sources[1], torch.ones(1, 1, h, w), torch.eye(4)[None], PinholeCamera(Kc, h, w),
                        PinholeCamera(K, H, W))
        assert torch.allclose(ident, sources[1][..., y0:y0 + h, x0:x0 + w], atol=1e-5)


def test_native_scales_downsample_images_and_intrinsics_consistently(frames):
    """At each native scale the GT depth (area-downsampled) still beats a 2x wrong depth."""
    target, sources, T, K, depth = _batch(frames)
    loss_fn = FastSelfSupervisedLoss(automask=False, scale_mode="native", noise=0.0, smoothness_weight=0.0)
    lo, hi = 1.0 / loss_fn.max_depth, 1.0 / loss_fn.min_depth

    def sig(d):
        return ((1.0 / d) - lo) / (hi - lo)

    for s in range(1, 4):
        ds = torch.nn.functional.avg_pool2d(depth, 2 ** s)
        per_scale = {}
        for name, dd in (("gt", ds), ("wrong", 2 * ds)):
            disps = [sig(torch.nn.functional.avg_pool2d(depth, 2 ** k)) for k in range(s)] + [sig(dd)]
            full = float(loss_fn(target, sources, T, K, disps)[1]["photometric"]) * len(disps)
            upto = float(loss_fn(target, sources, T, K, disps[:-1])[1]["photometric"]) * (len(disps) - 1)
            per_scale[name] = full - upto
        assert per_scale["gt"] < 0.8 * per_scale["wrong"], (s, per_scale)


def test_batchnorm_folding_keeps_outputs_and_gradients():
    """ConvBN folds frozen BatchNorm into the convolution: same depth, same gradients, same state dict."""
    from torch import nn

    from mono_depth_ros.models.default_net import ConvBN
    torch.manual_seed(0)
    net = build_model("default")
    for m in net.modules():  # non-trivial running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    x = torch.rand(2, 3, 64, 96)
    keys = set(net.state_dict())

    def run():
        net.train().freeze_batchnorm(True)
        net.zero_grad()
        out = net.predict_disps(x)
        sum(o.mean() for o in out).backward()
        return out[0].detach(), torch.cat([p.grad.flatten() for p in net.parameters()])

    out_fold, g_fold = run()
    fwd = ConvBN.forward
    try:
        ConvBN.forward = nn.Sequential.forward
        out_ref, g_ref = run()
    finally:
        ConvBN.forward = fwd
    assert set(net.state_dict()) == keys
    assert torch.allclose(out_fold, out_ref, atol=1e-5)
    assert torch.allclose(g_fold, g_ref, atol=1e-6 + 1e-4 * float(g_ref.abs().max()))
    net.train().freeze_batchnorm(False)   # training BatchNorm (offline training from scratch) is not folded
    assert net.stem[0][1].training


class TestHeapTrimPolicy:
    def _policy(self, rss):
        state = {"t": 0.0, "trims": 0}
        pol = HeapTrimPolicy(growth_mb=100, warmup_steps=3, check_period_s=5, rss=lambda: rss[0],
                             trim=lambda: state.__setitem__("trims", state["trims"] + 1) or True,
                             clock=lambda: state["t"])
        return pol, state

    def test_stable_working_set_is_never_trimmed(self):
        rss = [500.0]
        pol, st = self._policy(rss)
        for i in range(200):
            st["t"] = i * 0.2
            rss[0] = 500.0 + (i % 7) * 10   # sawtooth within the growth allowance
            pol.after_step()
        assert st["trims"] == 0 and pol.trims == 0

    def test_growth_is_trimmed_once_then_the_new_level_holds(self):
        rss = [500.0]
        pol, st = self._policy(rss)
        for i in range(10):
            st["t"] = i
            pol.after_step()
        rss[0] = 700.0                     # grew by 200 MB > 100
        st["t"] = 20
        assert pol.after_step() is True and st["trims"] == 1
        for i in range(30):                # live memory really is 700 now: no trim every check
            st["t"] = 30 + 6 * i
            pol.after_step()
        assert st["trims"] == 1


# ----------------------------------------------------------------------------- compiled SSIM+L1 kernels
class TestCompiledKernels:
    """``compile_photometric`` (inductor) and the engine's background compile: same values and gradients
    as the eager kernels, used only for the compiled shapes, and a failure anywhere leaves the eager ones."""

    @pytest.fixture
    def compiling(self, monkeypatch):
        import torch._dynamo
        monkeypatch.setattr(L, "_COMPILED", {"keys": frozenset(), "forward": None, "backward": None})
        with torch._dynamo.config.patch(disable=False):   # the test suite sets TORCH_COMPILE_DISABLE=1
            yield

    def test_compiled_kernels_serve_their_shapes_with_the_same_values(self, compiling, monkeypatch):
        torch.manual_seed(0)
        x = torch.rand(2, 3, 32, 48, requires_grad=True)
        y = torch.rand(2, 3, 32, 48)
        e = photometric_error_fast(x, y)
        g = torch.rand_like(e)
        gx, = torch.autograd.grad(e, x, g)
        from torch._dynamo.utils import counters
        before = counters["frames"]["ok"]
        L.compile_photometric([(2, 3, 32, 48)])
        assert counters["frames"]["ok"] >= before + 2        # dynamo really compiled forward and backward

        def eager_is_not_used(*_):
            raise AssertionError("eager kernel called")
        monkeypatch.setitem(L._PHOTO_KERNELS, "forward", eager_is_not_used)
        monkeypatch.setitem(L._PHOTO_KERNELS, "backward", eager_is_not_used)
        e2 = photometric_error_fast(x, y)
        gx2, = torch.autograd.grad(e2, x, g)
        assert torch.allclose(e, e2, atol=1e-6) and torch.allclose(gx, gx2, atol=1e-6)
        with pytest.raises(AssertionError, match="eager kernel called"):   # another shape: eager
            photometric_error_fast(torch.rand(1, 3, 32, 48), torch.rand(1, 3, 32, 48))

    def test_a_failing_compiled_kernel_falls_back_to_eager_for_good(self, compiling, monkeypatch):
        x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
        want = photometric_error_fast(x, y)

        def broken(*_):
            raise RuntimeError("simulated inductor failure")
        monkeypatch.setattr(L, "_COMPILED", {"keys": frozenset({L._key(x)}), "forward": broken, "backward": broken})
        warned = []
        monkeypatch.setattr(L.log, "warning", lambda msg, *a: warned.append(msg % a if a else msg))
        got = photometric_error_fast(x, y)
        assert torch.equal(got, want)
        assert any("simulated inductor failure" in w for w in warned) and not L._COMPILED["keys"]

    def test_engine_compiles_in_the_background_and_steps_agree(self, compiling, monkeypatch):
        from mono_depth_ros.adapt import AdaptationEngine, AdaptConfig
        from mono_depth_ros.adapt.triplets import Triplet

        H, W = 64, 128
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (3, H + 8, W + 64), dtype=np.uint8)
        K = torch.tensor([[0.6 * W, 0, W / 2], [0, 1.9 * H, H / 2], [0, 0, 1]], dtype=torch.float32)
        T_prev, T_next = torch.eye(4), torch.eye(4)
        T_prev[2, 3], T_next[2, 3] = 0.5, -0.5

        def img(k):
            return torch.from_numpy(np.ascontiguousarray(base[:, 4:4 + H, 4 + 8 * k:4 + 8 * k + W]))
        trips = [Triplet(int(1e9) * (i + 1), img(i + 1), (img(i), img(i + 2)), (T_prev, T_next), K) for i in range(4)]
        net = build_model("default")
        cfg = dict(train_height=H, train_width=W, crop_width=64, replay_per_step=3, anchor_weight=0.0)
        compiled = AdaptationEngine(net, None, AdaptConfig(compile_loss=True, **cfg))
        eager = AdaptationEngine(net, None, AdaptConfig(compile_loss=False, **cfg))
        assert eager.loss_kernels == "eager"
        end = time.monotonic() + 300
        while compiled.loss_kernels == "compiling" and time.monotonic() < end:
            time.sleep(0.2)
        assert compiled.loss_kernels == "compiled", compiled.loss_kernels
        assert {k[0] for k in L._COMPILED["keys"]} == {(4, 3, 64, 64), (4, 3, 32, 32), (4, 3, 16, 16), (4, 3, 8, 8)}
        a, b = compiled.train_batch(trips, True), eager.train_batch(trips, True)
        assert a.status == b.status == "ok" and a.loss == pytest.approx(b.loss, rel=1e-5)
        for (k, p), q in zip(compiled.model.state_dict().items(), eager.model.state_dict().values()):
            assert torch.allclose(p, q, atol=1e-6), k
        assert compiled.training_stats()["adapt_loss_kernels"] == "compiled"

    def test_engine_keeps_eager_kernels_when_compiling_fails(self, compiling, monkeypatch):
        from mono_depth_ros.adapt import AdaptationEngine, AdaptConfig
        from mono_depth_ros.adapt import engine as engine_mod

        def no_compiler(*_a, **_k):
            raise RuntimeError("no C++ compiler found")
        monkeypatch.setattr(engine_mod, "compile_photometric", no_compiler)
        warned = []
        monkeypatch.setattr(engine_mod.log, "warning", lambda msg, *a: warned.append(msg % a if a else msg))
        eng = AdaptationEngine(build_model("default"), None, AdaptConfig(compile_loss=True))
        end = time.monotonic() + 30
        while eng.loss_kernels == "compiling" and time.monotonic() < end:
            time.sleep(0.05)
        assert eng.loss_kernels == "eager (compiling failed)"
        assert any("no C++ compiler found" in w and "adapt_compile_loss: false" in w for w in warned), warned
