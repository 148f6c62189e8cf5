"""Only for colcon's ament_python build (``colcon build`` in a ROS 2 workspace): every fact — metadata,
dependencies, console scripts, data files — lives in pyproject.toml, which setuptools reads; setup.cfg puts the
console scripts where ROS 2 looks for a package's executables (lib/dexwm)."""

from setuptools import setup

setup()
