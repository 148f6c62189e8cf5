"""Shared helpers of the training / evaluation tests (no tests here): tiny sim-format episodes with a moving
hand drawn into the frames, a tiny model recipe (random ``dexwm_vit`` micro encoder) and its datasets file."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import yaml

from dexwm_model.config import load_yaml
from dexwm_model.data.episode import Episode, EpisodeMeta, WriterConfig, write_episode
from dexwm_model.training.config import TrainConfig, train_config_from_dict
from dexwm_model.kinematics.panda_allegro import robot_joint_limits, robot_joint_names

HW = (64, 64)
K = np.array([[60.0, 0.0, 32.0], [0.0, 60.0, 32.0], [0.0, 0.0, 1.0]])
FPS = 5.0

TINY_MODEL = {
    "encoder": {"kind": "dexwm_vit", "size": "micro", "image_size": [56, 56], "random_init": True, "seed": 3,
                "weights": None},
    "predictor": {"size": "tiny", "depth": 2, "width": 32, "heads": 2, "cond_dim": 32, "time_features": 16},
    "hand_head": {"depth": 1, "width": 32, "heads": 2, "mlp_ratio": 2.0},
    "latent_dim": None,
    "train_projection": False,
}


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], float)


def object_track(n: int) -> tuple[tuple[str, ...], np.ndarray]:
    """Two catalogue objects on the table (z = 0) for :func:`make_moving_episode`: ``red_cube`` still at (0.1, 0.1),
    ``blue_ball`` pushed along x from -0.2 to 0.2 m; poses ``(n, 2, 7)`` (identity orientation)."""
    poses = np.zeros((n, 2, 7))
    poses[..., 3] = 1.0
    poses[:, 0, :2] = (0.1, 0.1)
    poses[:, 1, 0] = np.linspace(-0.2, 0.2, n)
    poses[:, 1, 1] = -0.1
    return ("red_cube", "blue_ball"), poses


def make_moving_episode(n: int, seed: int, objects: bool = False) -> Episode:
    """A camera 1 m above the origin looking down; the right hand's 21 keypoints circle the image centre (one
    revolution per 6 s) at 0.2 m height, each drawn as a bright blob into a fixed noisy background. With
    ``objects`` the episode also holds :func:`object_track`'s two objects (drawn as 6 px squares)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FPS
    pose = np.tile(np.eye(4), (n, 1, 1))
    pose[:, :3, :3] = _rot_x(math.pi)
    pose[:, :3, 3] = (0.0, 0.0, 1.0)
    phase = 2 * math.pi * t / 6.0 + seed
    wrist = np.stack([0.18 * np.cos(phase), 0.18 * np.sin(phase), np.full(n, 0.2)], -1)
    offsets = np.array([[0.012 * (j % 5), 0.008 * (j // 5), 0.0] for j in range(21)])
    kw = wrist[:, None, :] + offsets[None]
    R, tr = pose[:, :3, :3], pose[:, :3, 3]
    kc = np.einsum("tji,tkj->tki", R, kw - tr[:, None])
    kp = kc[..., :2] / kc[..., 2:3] * [K[0, 0], K[1, 1]] + K[:2, 2]
    background = rng.integers(20, 90, (HW[0], HW[1], 3)).astype(np.uint8)
    frames = np.repeat(background[None], n, axis=0)
    colours = rng.integers(120, 256, (21, 3))
    for f in range(n):
        for j in range(21):
            u, v = int(kp[f, j, 0]), int(kp[f, j, 1])
            frames[f, max(0, v - 2):v + 2, max(0, u - 2):u + 2] = colours[j]
    names, obj = object_track(n) if objects else ((), np.zeros((n, 0, 7)))
    for f in range(n):
        for o in range(len(names)):  # camera looking straight down from 1 m: u = 60 x + 32, v = -60 y + 32
            u, v = int(60 * obj[f, o, 0] + 32), int(-60 * obj[f, o, 1] + 32)
            frames[f, max(0, v - 3):v + 3, max(0, u - 3):u + 3] = (250, 30 * o, 30)
    low, high = robot_joint_limits()
    q = np.tile((low + high) / 2, (n, 1))  # joint 0's middle is 0
    q[:, 0] = 2.8 * np.sin(phase)  # the base joint swings with the circle, inside its +-2.9 rad limit
    return Episode(
        meta=EpisodeMeta(robot="panda_allegro_right", scene_seed=seed, episode_kind="reach",
                         object_layout={m: [float(obj[0, o, 0]), float(obj[0, o, 1]), 0.0] for o, m in enumerate(names)},
                         fps=FPS, generator_version="test/training", camera_name="test"),
        frames=frames, timestamps=t, joint_positions=q, commanded_targets=q, keypoints_world=kw,
        keypoints_camera=kc, keypoints_pixels=kp, camera_intrinsics=K.copy(), camera_pose_world=pose,
        object_poses=obj, joint_names=robot_joint_names(), object_names=names,
    )


def write_episodes(root: Path, lengths=(40, 40), objects: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(lengths):
        write_episode(root / f"episode_{i:06d}.h5", make_moving_episode(n, seed=i, objects=objects),
                      WriterConfig("lzf", 1))
    return root


def datasets_file(tmp: Path, **clip) -> Path:
    """config/datasets.yaml with denser clip slots (more clips per epoch from two short episodes)."""
    data = load_yaml("datasets.yaml")
    data["clip"].update({"clip_stride_s": 0.4, **clip})
    path = tmp / "datasets_test.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def tiny_config(tmp: Path, **overrides) -> TrainConfig:
    """The cpu_default recipe shrunk to a test-sized model and a few steps."""
    base = copy.deepcopy(load_yaml("train.yaml")["cpu_default"])
    base["model"] = copy.deepcopy(TINY_MODEL)
    base["data"].update({"datasets": str(datasets_file(tmp)), "batch_size": 4, "cache_dir": str(tmp / "cache"),
                         "context_frames": 4})
    base["optim"].update({"lr": 3e-3, "warmup_steps": 2, "min_lr": 1e-4})
    base.update({"max_steps": 6, "epochs": None, "log_every": 1, "checkpoint_every": 3, "threads": 1,
                 "device": "cpu"})
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return train_config_from_dict(base)


def ddp_train_twice(requests) -> None:
    """One rank of a local process group: run the training requests one after the other in the same group
    (spawning processes is the slow part of a CPU DDP test)."""
    from dexwm_model.training.cli import run_request
    from dexwm_model.training.distributed import setup, teardown

    info = setup("cpu")
    try:
        for req in requests:
            run_request(req)
    finally:
        teardown(info)
