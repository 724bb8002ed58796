"""Checkpoint faults in a running depth_node (own process, real DDS): a full disk, a read-only
directory, symlinks planted in the checkpoint directory, corrupt checkpoints at start.

The node must keep serving depth, say clearly what failed (naming the file or directory), never
leave a half-written file, and never lose the last good checkpoint. SIGKILL during a write is
covered by test_adapt_engine.py::TestCheckpointStore::test_sigkill_during_saves_never_leaves_a_loadable_half_file
(store level, random kill moments) and test_node_adaptation.py::test_adapts_checkpoints_and_resumes_after_sigkill
(node level); both carry the ``faults`` marker.
"""
import os
import resource
import subprocess

import pytest

from mono_depth_ros.adapt import CheckpointStore
from mono_depth_ros.adapt.persistence import LATEST, PREVIOUS
from mono_depth_ros.checkpoint import load_checkpoint
from mono_depth_ros.models import build_model

from .rosutil import NodeProcess, make_camera_info, make_image, spin_until, textured_image
from .test_node_dds import _qos_sensor, _wait_ready, ros_node  # noqa: F401  (fixture)

rclpy = pytest.importorskip("rclpy")
pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.faults]

W, H = 320, 96


def _can_mount(tmp_path) -> bool:
    """Root with CAP_SYS_ADMIN (containers often have it, CI runners often not)."""
    if os.geteuid() != 0:
        return False
    d = tmp_path / "mount_probe"
    d.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0:
        return False
    subprocess.run(["umount", str(d)], check=True)
    return True


class Client:
    def __init__(self, node, ex, proc):
        from sensor_msgs.msg import CameraInfo, Image
        from std_srvs.srv import Trigger
        self.node, self.ex, self.proc = node, ex, proc
        self.img = node.create_publisher(Image, "image", _qos_sensor())
        self.info = node.create_publisher(CameraInfo, "camera_info", 10)
        self.depths = []
        node.create_subscription(Image, "depth", self.depths.append, 10)
        self.save_cli = node.create_client(Trigger, "/mono_depth/save_checkpoint")
        self.frame = make_image(textured_image(W, H))
        self.cam = make_camera_info(W, H, 200.0)
        assert spin_until(node, lambda: self.img.get_subscription_count() > 0, 20, ex)
        assert self.save_cli.wait_for_service(timeout_sec=20)

    def depth_continues(self, label, n=3):
        before = len(self.depths)
        for _ in range(40):
            self.info.publish(self.cam)
            self.img.publish(self.frame)
            if spin_until(self.node, lambda: len(self.depths) >= before + n, 0.1, self.ex):
                break
        assert len(self.depths) >= before + n, f"{label}: no depth\n{self.proc.log()[-3000:]}"
        assert self.proc.alive(), label

    def save(self):
        from std_srvs.srv import Trigger
        fut = self.save_cli.call_async(Trigger.Request())
        assert spin_until(self.node, fut.done, 30, self.ex), self.proc.log()[-3000:]
        return fut.result()


def _no_temp_files(d):
    left = [p.name for p in d.iterdir() if p.name.endswith(".tmp")]
    assert not left, f"half-written files left: {left}"


def test_full_readonly_and_symlinked_checkpoint_dir_node_keeps_serving(tmp_path, ros_node):
    node, ex = ros_node
    ckdir = tmp_path / "checkpoints"
    proc = NodeProcess(tmp_path, params={"input_width": W, "input_height": H, "checkpoint_period": 0.0,
                                         "publish_points": False, "error_throttle": 0.0})
    mounted = []
    try:
        _wait_ready(proc)
        c = Client(node, ex, proc)
        c.depth_continues("start")
        r = c.save()
        assert r.success and r.message == str(ckdir / LATEST), r.message
        r = c.save()
        assert r.success and (ckdir / PREVIOUS).is_file()

        # --- full: the node's file size limit lowered below a checkpoint's size (a real EFBIG from
        # write(2); CPython ignores SIGXFSZ). Set on the running process so DDS set-up is unaffected.
        soft, hard = resource.prlimit(proc.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(proc.proc.pid, resource.RLIMIT_FSIZE, (200_000, hard))
        try:
            r = c.save()
            assert not r.success, r.message
            assert f"cannot write checkpoint in {ckdir}: File too large" in r.message, r.message
            assert proc.wait_for_log("checkpoint not saved (requested): cannot write checkpoint in", 5)
            c.depth_continues("disk full")
            _no_temp_files(ckdir)
            got = CheckpointStore(ckdir).load_latest(quarantine=False)
            assert got is not None, "the last good checkpoint was lost"
        finally:
            resource.prlimit(proc.proc.pid, resource.RLIMIT_FSIZE, (soft, hard))
        r = c.save()
        assert r.success, r.message
        assert proc.wait_for_log("checkpoints are written again", 5)
        load_checkpoint(ckdir / LATEST)

        # --- full for real (ENOSPC): a 256 KiB tmpfs mounted over the directory, where allowed.
        if _can_mount(tmp_path):
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(ckdir)], check=True)
            mounted.append(ckdir)
            r = c.save()
            assert not r.success and "No space left on device" in r.message, r.message
            c.depth_continues("ENOSPC")
            _no_temp_files(ckdir)
            subprocess.run(["umount", str(ckdir)], check=True)
            mounted.pop()
            assert c.save().success

        # --- read-only directory: chmod for a normal user; root ignores modes, so a read-only bind mount.
        ro_done = False
        if os.geteuid() != 0:
            ckdir.chmod(0o555)
            ro_done = True
        elif _can_mount(tmp_path):
            subprocess.run(["mount", "--bind", str(ckdir), str(ckdir)], check=True)
            mounted.append(ckdir)
            subprocess.run(["mount", "-o", "remount,bind,ro", str(ckdir)], check=True)
            ro_done = True
        if ro_done:
            try:
                before = sorted(p.name for p in ckdir.iterdir())
                r = c.save()
                assert not r.success and f"checkpoint directory {ckdir} is not writable" in r.message, r.message
                c.depth_continues("read-only")
                assert sorted(p.name for p in ckdir.iterdir()) == before
            finally:
                if mounted:
                    subprocess.run(["umount", str(ckdir)], check=True)
                    mounted.pop()
                ckdir.chmod(0o755)
            assert c.save().success

        # --- symlinks planted in the directory pointing outside: the save replaces the links, never
        # writes through them.
        outside = [tmp_path / "precious_a.bin", tmp_path / "precious_b.bin"]
        for p in outside:
            p.write_bytes(b"user data")
        for name, target in zip((LATEST, PREVIOUS), outside):
            (ckdir / name).unlink(missing_ok=True)
            (ckdir / name).symlink_to(target)
        r = c.save()
        assert r.success, r.message
        assert all(p.read_bytes() == b"user data" for p in outside)
        assert not (ckdir / LATEST).is_symlink() and (ckdir / LATEST).resolve().parent == ckdir.resolve()
        load_checkpoint(ckdir / LATEST)
        c.depth_continues("end")
    finally:
        for d in mounted:
            subprocess.run(["umount", str(d)])
        rc = proc.stop()
    assert rc == 0
    assert "Traceback" not in proc.log(), proc.log()


def test_corrupt_checkpoint_at_start_falls_back_and_is_never_rotated_over_the_good_one(tmp_path, ros_node):
    node, ex = ros_node
    ckdir = tmp_path / "checkpoints"
    store = CheckpointStore(ckdir)
    m = build_model("default")
    store.save(m, m.state_dict(), (H, W), steps=5, frames_seen=50)    # -> becomes adapted.prev.pt
    store.save(m, m.state_dict(), (H, W), steps=9, frames_seen=90)    # adapted.pt ...
    (ckdir / LATEST).write_bytes((ckdir / LATEST).read_bytes()[:5000])  # ... truncated (crash, bad disk)

    # 1. Corrupt newest, good previous: resume from the previous one, naming the bad file.
    proc = NodeProcess(tmp_path, params={"input_width": W, "input_height": H, "checkpoint_period": 0.0,
                                         "publish_points": False})
    try:
        _wait_ready(proc)
        log = proc.log()
        assert f"ignoring unusable checkpoint {ckdir / LATEST}" in log, log
        assert f"resuming from adapted checkpoint {ckdir / PREVIOUS} (5 steps)" in log, log
        assert (ckdir / (LATEST + ".rejected")).exists()
        c = Client(node, ex, proc)
        c.depth_continues("resumed from previous")
        # A save rotates adapted.pt -> adapted.prev.pt: the corrupt file must not replace the good one.
        assert c.save().success
        assert load_checkpoint(ckdir / PREVIOUS)[1]["training"]["steps"] == 5
        assert load_checkpoint(ckdir / LATEST)[1]["training"]["steps"] == 0
    finally:
        assert proc.stop() == 0

    # 2. Both unusable: the shipped weights, with an error naming both files.
    for name in (LATEST, PREVIOUS):
        (ckdir / name).write_bytes(b"\x00garbage" * 100)
    proc = NodeProcess(tmp_path, params={"input_width": W, "input_height": H, "checkpoint_period": 0.0,
                                         "publish_points": False}, name="node2")
    try:
        _wait_ready(proc)
        log = proc.log()
        for name in (LATEST, PREVIOUS):
            assert f"ignoring unusable checkpoint {ckdir / name}" in log, log
        assert "no usable adapted checkpoint" in log and "shipped weights" in log, log
        assert "weights: " in log and "default_A.pt" in log.split("depth node ready")[1].splitlines()[0]
        Client(node, ex, proc).depth_continues("shipped weights")
    finally:
        assert proc.stop() == 0
