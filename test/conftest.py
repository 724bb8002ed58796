"""Test-wide environment: loopback-only ROS 2 with a fresh domain per pytest run."""
import os
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Set before anything imports rclpy (also inherited by every process a test starts).
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
if "MONO_DEPTH_TEST_DOMAIN" not in os.environ:
    # One fresh domain per pytest run (valid ids: 1..101 on Linux default ports).
    os.environ["MONO_DEPTH_TEST_DOMAIN"] = str(random.SystemRandom().randint(20, 99))
os.environ["ROS_DOMAIN_ID"] = os.environ["MONO_DEPTH_TEST_DOMAIN"]
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(ROOT / "config" / "fastdds_shm.xml")
os.environ["RMW_FASTRTPS_USE_QOS_FROM_XML"] = "0"
os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# No background torch.compile of the loss kernels in every engine and node a test builds (seconds of CPU
# each, on a 2-core machine that also runs the DDS tests' nodes); test_fast_step.py compiles on purpose.
os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")
