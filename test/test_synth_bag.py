"""Bag output: contents, reproducibility, validation before writing, interruption safety."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mono_depth_ros import bagio, msgconv
from mono_depth_ros.conventions import (
    BASE_FRAME, CAMERA_LINK_FRAME, CAMERA_OPTICAL_FRAME, MAP_FRAME, ODOM_FRAME, Topics,
)
from mono_depth_ros.tools.synth import generate_bag, get_preset, render_drive
from mono_depth_ros.tools.synth.bag import DYNAMIC_MASK_TOPIC

SMALL = dict(duration_s=1.0, width=64, height=24, progress=False)


def _raw_messages(path):
    with bagio.open_reader(path) as reader:
        return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    out = tmp_path_factory.mktemp("bag") / "drive"
    return generate_bag(out, preset="B", seed=7, sensors=list(_all_sensors()), **SMALL)


def _all_sensors():
    from mono_depth_ros.tools.synth.bag import SENSORS
    return SENSORS


def test_bag_topics_types_and_headers(bag):
    topics = bagio.bag_topics(bag)
    assert topics[Topics.BAG_IMAGE] == "sensor_msgs/msg/Image"
    assert topics[Topics.BAG_DEPTH_GT] == "sensor_msgs/msg/Image"
    assert topics[Topics.BAG_POSE_GT] == "geometry_msgs/msg/PoseStamped"
    assert topics[Topics.BAG_TF_STATIC] == "tf2_msgs/msg/TFMessage"
    assert (bag / "contact_sheet.png").stat().st_size > 0
    msgs = list(bagio.iter_messages(bag))
    stamps = [t for _, t, _ in msgs]
    assert stamps == sorted(stamps)
    by_topic = {}
    for topic, t, m in msgs:
        by_topic.setdefault(topic, []).append((t, m))
        hdr = getattr(m, "header", None)
        if hdr is not None:
            assert hdr.stamp.sec * 10**9 + hdr.stamp.nanosec == t, topic
    assert len(by_topic[Topics.BAG_IMAGE]) == 11
    assert 40 <= len(by_topic[Topics.BAG_ODOM]) <= 60
    assert 100 <= len(by_topic[Topics.BAG_IMU]) <= 201
    img_t, img = by_topic[Topics.BAG_IMAGE][0]
    dep_t, dep = by_topic[Topics.BAG_DEPTH_GT][0]
    assert img.header == dep.header and img.header.frame_id == CAMERA_OPTICAL_FRAME
    rgb, d = msgconv.image_to_rgb(img), msgconv.depth_image_to_metres(dep)
    assert rgb.shape == (24, 64, 3) and rgb.dtype == np.uint8
    assert d.shape == (24, 64) and d.dtype == np.float32 and np.isposinf(d).any()
    _, mask = by_topic[DYNAMIC_MASK_TOPIC][0]
    assert mask.encoding == "mono8" and mask.header == img.header and set(np.unique(mask.data)) <= {0, 255}
    _, info = by_topic[Topics.BAG_CAMERA_INFO][0]
    assert info.distortion_model == "plumb_bob" and not np.any(info.d)
    np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), get_preset("B").intrinsics(64, 24))
    _, rinfo = by_topic[Topics.BAG_RIGHT_CAMERA_INFO][0]
    assert rinfo.p[3] == pytest.approx(-info.k[0] * get_preset("B").stereo_baseline)
    _, pose = by_topic[Topics.BAG_POSE_GT][0]
    assert pose.header.frame_id == MAP_FRAME
    _, odom = by_topic[Topics.BAG_ODOM][5]
    assert odom.header.frame_id == ODOM_FRAME and odom.child_frame_id == BASE_FRAME
    _, static = by_topic[Topics.BAG_TF_STATIC][0]
    pairs = {(t.header.frame_id, t.child_frame_id) for t in static.transforms}
    assert (BASE_FRAME, CAMERA_LINK_FRAME) in pairs and (CAMERA_LINK_FRAME, CAMERA_OPTICAL_FRAME) in pairs
    _, fix = by_topic[Topics.BAG_GPS][0]
    assert fix.status.status == 0 and abs(fix.latitude - 48.137) < 0.01


def test_synth_info_in_metadata(bag):
    info = bagio.synth_info(bag)
    assert info["preset"] == "B" and info["seed"] == 7 and info["stereo"] is True
    np.testing.assert_allclose(np.array(info["T_base_camera"]), get_preset("B").T_base_camera(), atol=1e-9)
    assert np.array(info["T_map_odom"]).shape == (4, 4)


def test_tf_static_is_transient_local(bag):
    meta = (bag / "metadata.yaml").read_text()
    block = meta.split("name: /tf_static")[1].split("name: ")[0]
    assert "durability: 1" in block          # TRANSIENT_LOCAL


def test_same_seed_identical_bags_different_seed_differs(tmp_path):
    a = generate_bag(tmp_path / "a", preset="A", seed=11, **SMALL)
    b = generate_bag(tmp_path / "b", preset="A", seed=11, storage="sqlite3", **SMALL)
    c = generate_bag(tmp_path / "c", preset="A", seed=12, **SMALL)
    ra, rb, rc = _raw_messages(a), _raw_messages(b), _raw_messages(c)
    assert ra == rb
    assert ra != rc


def test_worker_processes_give_identical_bag(tmp_path):
    a = generate_bag(tmp_path / "a", preset="B", seed=2, workers=1, **SMALL)
    b = generate_bag(tmp_path / "b", preset="B", seed=2, workers=2, **SMALL)
    assert _raw_messages(a) == _raw_messages(b)


def test_render_drive_reproducible():
    f1 = list(render_drive("B", seed=4, duration_s=0.2, width=48, height=16))
    f2 = list(render_drive("B", seed=4, duration_s=0.2, width=48, height=16))
    assert len(f1) == 3
    for x, y in zip(f1, f2):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.depth, y.depth)


@pytest.mark.parametrize("kwargs, words", [
    (dict(preset="C"), ["preset", "'A'", "'B'"]),
    (dict(width=0), ["width"]),
    (dict(rate_hz=-1.0), ["rate_hz"]),
    (dict(duration_s=float("nan")), ["duration_s"]),
    (dict(storage="rosbag1"), ["storage", "mcap", "sqlite3"]),
    (dict(sensors=["camera", "lidar"]), ["lidar", "imu"]),
    (dict(seed=-3), ["seed"]),
    (dict(noise={"imu_rate": 200}), ["imu_rate", "imu_rate_hz"]),
    (dict(noise="gps_rate_hz=100"), ["gps_rate_hz", "20"]),
    (dict(workers=0), ["workers"]),
])
def test_invalid_parameters_fail_before_writing(tmp_path, kwargs, words):
    out = tmp_path / "x"
    args = dict(SMALL, **kwargs)
    with pytest.raises(ValueError) as err:
        generate_bag(out, **args)
    for w in words:
        assert w in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_render_drive_rejects_unknown_options():
    with pytest.raises(ValueError, match="frobnicate"):
        render_drive("A", frobnicate=1)
    with pytest.raises(ValueError, match="sunny_suburb"):
        get_preset("suburb")
    assert get_preset("sunny_suburb") is get_preset("A")


def test_noise_overrides_change_rates(tmp_path):
    out = generate_bag(tmp_path / "n", preset="A", seed=1, sensors="imu,gps", contact_sheet=False,
                       noise="imu_rate_hz=200,gps_rate_hz=2,imu_orientation=true", **SMALL)
    msgs = list(bagio.iter_messages(out))
    imu = [m for t, _, m in msgs if t == Topics.BAG_IMU]
    assert len(imu) == 201 and len([1 for t, _, _ in msgs if t == Topics.BAG_GPS]) == 3
    assert imu[0].orientation_covariance[0] > 0 and imu[0].orientation.w != 1.0


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_bag(out, **SMALL)
    assert (out / "keep").exists()
    generate_bag(out, overwrite=True, **SMALL)
    assert (out / "metadata.yaml").exists() and not (out / "keep").exists()


def test_interrupted_generation_leaves_no_bag(tmp_path):
    out = tmp_path / "d"

    def boom(k, frame):
        if k == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_bag(out, frame_callback=boom, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_sigint_during_cli_generation(tmp_path):
    out = tmp_path / "d"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    # A drive far too long to finish before the signal. The child gets the default SIGINT disposition:
    # a parent started in the background (nohup, CI) passes SIGINT on as ignored, and Python keeps that.
    proc = subprocess.Popen([sys.executable, "-m", "mono_depth_ros", "generate", str(out), "--duration", "600",
                             "--width", "64", "--height", "24", "--quiet", "--workers", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    partial = tmp_path / "d.partial"
    deadline = time.monotonic() + 60
    while not partial.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not out.exists() and not partial.exists()


def test_cli_rejects_bad_preset(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    res = subprocess.run([sys.executable, "-m", "mono_depth_ros", "generate", str(tmp_path / "x"),
                          "--preset", "Z"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "preset" in res.stderr and "'A'" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_bagio_errors_name_the_file(tmp_path, bag):
    with pytest.raises(bagio.BagError, match="nope"):
        with bagio.open_reader(tmp_path / "nope"):
            pass
    # A truncated copy: every failure is a BagError naming the bag, never a hang.
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(bag, broken)
    mcap = next(broken.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    with pytest.raises(bagio.BagError, match="broken"):
        list(bagio.iter_messages(broken))
    corrupt = tmp_path / "corrupt"
    shutil.copytree(bag, corrupt)
    (corrupt / "metadata.yaml").write_text("rosbag2_bagfile_information: [this is: not, valid")
    with pytest.raises(bagio.BagError, match="corrupt"):
        with bagio.open_reader(corrupt):
            pass
    partial = tmp_path / "x.partial"
    partial.mkdir()
    with pytest.raises(bagio.BagError, match="interrupted"):
        with bagio.open_reader(partial):
            pass


def test_iter_messages_skips_unknown_types_with_warning(bag, monkeypatch):
    real = bagio.open_reader

    import contextlib

    @contextlib.contextmanager
    def fake(path):
        with real(path) as reader:
            fielddefs = dict(reader.typestore.fielddefs)
            fielddefs.pop("sensor_msgs/msg/NavSatFix")
            monkeypatch.setattr(reader.typestore, "fielddefs", fielddefs)
            yield reader

    monkeypatch.setattr(bagio, "open_reader", fake)
    with pytest.warns(UserWarning, match="/gps/fix"):
        topics = {t for t, _, _ in bagio.iter_messages(bag)}
    assert Topics.BAG_GPS not in topics and Topics.BAG_IMAGE in topics
