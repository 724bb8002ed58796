"""Depth metrics: known answers on small arrays, masking, median scaling."""
import math

import numpy as np
import pytest

from mono_depth_ros.metrics import MetricAccumulator, compute_depth_metrics, format_markdown, valid_mask


def test_known_answer():
    gt = np.array([[1.0, 2.0], [4.0, 10.0]])
    pred = np.array([[1.1, 2.0], [5.0, 5.0]])
    m = compute_depth_metrics(gt, pred)
    # |p-g|/g = 0.1, 0, 0.25, 0.5
    assert math.isclose(m["abs_rel"], (0.1 + 0 + 0.25 + 0.5) / 4, rel_tol=1e-9)
    # (p-g)^2/g = 0.01, 0, 0.25, 2.5
    assert math.isclose(m["sq_rel"], (0.01 + 0 + 0.25 + 2.5) / 4, rel_tol=1e-9)
    assert math.isclose(m["rmse"], math.sqrt((0.01 + 0 + 1 + 25) / 4), rel_tol=1e-9)
    logs = [math.log(1.1), 0, math.log(1.25), math.log(0.5)]
    assert math.isclose(m["rmse_log"], math.sqrt(sum(v * v for v in logs) / 4), rel_tol=1e-9)
    # ratios max(p/g, g/p) = 1.1, 1, 1.25, 2.0: < 1.25 -> 2/4; < 1.5625 -> 3/4; < 1.953 -> 3/4
    assert (m["a1"], m["a2"], m["a3"]) == (0.5, 0.75, 0.75)
    # median(g/p) of (0.909, 1, 0.8, 2) = (0.909 + 1)/2
    assert math.isclose(m["scale_ratio"], (1 / 1.1 + 1.0) / 2, rel_tol=1e-9)
    assert m["n_valid"] == 4


def test_masking_inf_nan_and_cap():
    gt = np.array([[np.inf, np.nan, 0.0, 90.0, 5.0]])
    pred = np.array([[3.0, 3.0, 3.0, 3.0, 4.0]])
    assert valid_mask(gt).tolist() == [[False, False, False, False, True]]
    m = compute_depth_metrics(gt, pred)
    assert m["n_valid"] == 1 and math.isclose(m["abs_rel"], 0.2)
    assert compute_depth_metrics(np.full((2, 2), np.inf), np.ones((2, 2))) is None


def test_median_scaling_removes_global_scale():
    rng = np.random.default_rng(0)
    gt = rng.uniform(2, 50, (16, 16))
    m_raw = compute_depth_metrics(gt, gt * 0.5)
    m_med = compute_depth_metrics(gt, gt * 0.5, median_scaling=True)
    assert math.isclose(m_raw["abs_rel"], 0.5, rel_tol=1e-9) and m_raw["a1"] == 0
    assert m_med["abs_rel"] < 1e-9 and m_med["a1"] == 1
    assert math.isclose(m_med["scale_ratio"], 2.0)


def test_accumulator_and_table():
    acc = MetricAccumulator()
    acc.add(np.array([[1.0, 2.0]]), np.array([[1.0, 2.0]]))
    acc.add(np.array([[1.0, 2.0]]), np.array([[2.0, 4.0]]))
    s = acc.summary()
    assert acc.count == 2 and math.isclose(s["raw"]["abs_rel"], 0.5) and s["median_scaled"]["abs_rel"] < 1e-9
    table = format_markdown(s)
    assert "| none (metric) | 0.500" in table and "AbsRel" in table


def test_shape_mismatch():
    with pytest.raises(ValueError, match="equal"):
        compute_depth_metrics(np.ones((2, 2)), np.ones((2, 3)))
