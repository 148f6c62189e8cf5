"""Object keypoints of a sample: the centre of each catalogue object, projected into the frame.

The catalogue is the scene's object list (``config/sim.yaml`` ``scene.objects``, in that order): slot ``m`` of
``object_px`` is always the same object, so a head can learn one map per object. Objects an episode does not hold,
points behind the camera and points outside the image are not valid. Sources without object poses (EgoDex, DROID,
rosbag) give all-invalid slots. Pixel convention as :mod:`dexwm_model.datasets.keypoints`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from dexwm_model.config import ConfigError, load_yaml
from dexwm_model.datasets.keypoints import finalize, project, world_to_camera

OBJECT_MOVED_PX = 2.0  # an object moved when its centre is this far (pixels) from where it was in the newest seen frame


@lru_cache(maxsize=8)
def object_catalogue(file: str = "sim.yaml") -> tuple[str, ...]:
    """Names of the scene's objects in their configured order."""
    objects = (load_yaml(file).get("scene") or {}).get("objects")
    if not isinstance(objects, list) or not objects:
        raise ConfigError(f"{file}: scene.objects must be a non-empty list of objects with a name")
    names = tuple(str(o.get("name")) for o in objects if isinstance(o, dict))
    if len(names) != len(objects) or len(set(names)) != len(names):
        raise ConfigError(f"{file}: scene.objects must each have a unique name, found {names}")
    return names


def no_objects(frames: int, catalogue: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """All-invalid object keypoints ``(K, M, 2)`` float32 zeros and ``(K, M)`` False."""
    m = len(catalogue)
    return np.zeros((frames, m, 2), np.float32), np.zeros((frames, m), bool)


def object_pixels(positions_world: np.ndarray, names: Sequence[str], catalogue: Sequence[str],
                  intrinsics: np.ndarray, camera_pose_world: np.ndarray,
                  image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Object centres ``(K, N, 3)`` (world, of the episode's ``names``) -> catalogue slots ``(K, M, 2)`` pixels and
    ``(K, M)`` validity. ``intrinsics`` (3, 3); ``camera_pose_world`` camera-to-world ``(K, 4, 4)`` or ``(4, 4)``."""
    p = np.asarray(positions_world, dtype=np.float64)
    if p.ndim != 3 or p.shape[1:] != (len(names), 3):
        raise ValueError(f"object positions: expected (K, {len(names)}, 3), found {p.shape}")
    k = p.shape[0]
    full = np.zeros((k, len(catalogue), 3))
    present = np.zeros((k, len(catalogue)), bool)
    slot = {n: i for i, n in enumerate(catalogue)}
    for j, name in enumerate(names):
        if name in slot:  # an object outside the catalogue has no map to learn
            full[:, slot[name]] = p[:, j]
            present[:, slot[name]] = np.isfinite(p[:, j]).all(-1)
    full = np.where(present[..., None], full, 0.0)
    uv = project(world_to_camera(full, camera_pose_world), intrinsics)
    return finalize(uv, present, image_hw)
