"""ament_python package: `colcon build` in a ROS 2 workspace, or `pip install -e .` in a venv."""
from glob import glob

from setuptools import find_packages, setup

package_name = "mono_depth_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={package_name: ["weights/*.pt", "weights/anchors_A/*.webp"]},
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml") + glob("config/*.rviz")),
    ],
    # Python requirements are declared in package.xml (rosdep) and requirements.txt (venv).
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="mono_depth_ros developers",
    maintainer_email="mono_depth_ros@example.com",
    description="Monocular metric depth for ROS 2 with online self-supervised adaptation from ego-motion.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "depth_node = mono_depth_ros.ros.depth_node:main",
            "mono-depth = mono_depth_ros.cli:main",
            "depth_scorer = mono_depth_ros.tools.score_node:main",
        ],
    },
)
