"""The simulated Panda + Allegro (MuJoCo).

Offscreen rendering needs an OpenGL platform chosen before ``mujoco`` is first imported; headless machines have
EGL (Mesa) but no display, so EGL is the default unless the user chose otherwise.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
