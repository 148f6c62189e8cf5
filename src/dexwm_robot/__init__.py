"""The bottom layer: the robot's facts, which the simulator, the world model and the planner all build on.

``joint_names`` (the drivers' joint and frame names in the project's 23-joint order), ``hand_layout`` (the 21-point
hand layout and the Allegro's keypoint sites), ``scene`` (the composed MuJoCo description: Panda + Allegro, table,
objects, camera), ``assets`` (where the Panda / Allegro model files are) and ``config`` (the parameter files under
``config/`` they are read from). Imports nothing else of the project (``pyproject.toml`` ``[tool.importlinter]``).
"""

import os

# offscreen rendering needs its OpenGL platform chosen before ``mujoco`` is first imported (``scene`` imports it)
os.environ.setdefault("MUJOCO_GL", "egl")
