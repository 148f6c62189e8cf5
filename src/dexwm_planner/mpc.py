"""Goal-image model-predictive control with the latent world model, without ROS.

:class:`GoalImageMPC` is the loop a controller runs: ``set_goal(goal_image, task)`` once per episode,
then repeatedly ``observe(image, joints, t)`` -> ``plan()`` -> execute ``MPCStep.waypoints`` (the first
``execute_steps`` waypoints of the best plan) -> observe again. The ROS planner node and ``dexwm bench tasks``
are thin users of it.

What is computed once and cached:

* the goal image is encoded once per :meth:`GoalImageMPC.set_goal` (and its hand keypoints, when the cost
  compares hand pixels, are read once from the goal latent);
* every camera frame is encoded once, when it is observed; the latents of the last ``context_frames`` frames
  (kept at least ``frame_period_s`` apart, the newest always kept) form the context of every replan, so a
  replan never touches the image encoder;
* the planner's warm start (previous best plan shifted by the executed waypoints) carries over between replans
  and is cleared with the goal.

After each replan the best plan is rolled out once more (one sample) to get its predicted latents (kept as
``GoalImageMPC.last_predicted_latents`` ``(T, P, d)`` until the next replan, e.g. to decode imagined frames): their
hand keypoints are :attr:`MPCStep.predicted_keypoints`, and the predicted latent of the frame after the executed
waypoints is compared with the latent of the next observed frame (``info["prediction_error"]`` of the next
replan: how far reality drifts from the model's prediction).

Configuration: section ``mpc`` of ``config/mpc.yaml`` (:class:`MPCConfig`); the search itself is
``config/planner.yaml`` (CPU-sized variants: section ``planner_profiles`` of ``config/mpc.yaml``,
:func:`mpc_planner_config`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from dexwm_robot.config import ConfigError, load_section, load_yaml
from dexwm_model.kinematics.panda_allegro import NUM_ROBOT_JOINTS
from dexwm_model.world_model import WorldModel
from dexwm_planner.planners.config import PlannerConfig, load_planner_config
from dexwm_planner.planners.cost import latent_distance
from dexwm_planner.planners.kinematics import NUM_HAND_POINTS, RIGHT_HEATMAPS
from dexwm_planner.planners.planner import PlanObservation, Planner, PlanResult, check_goal_depth

CONFIG_FILE = "mpc.yaml"
KEYPOINT_SOURCES = ("head", "fk", "none")
TASK_NAMES = ("reach", "grasp", "place")
_TIME_TOLERANCE_S = 1e-6  # frames this much closer than frame_period_s still count as a period apart (rounding)
NUM_HEATMAPS = 2 * NUM_HAND_POINTS  # 12: left wrist + 5 tips, then right wrist + 5 tips


class MPCNotReady(RuntimeError):
    """:meth:`GoalImageMPC.plan` was called before a goal was set or a frame was observed."""


@dataclass
class MPCConfig:
    """Section ``mpc`` of ``config/mpc.yaml`` (see the comments there)."""

    context_frames: int | None = None
    frame_period_s: float = 0.2
    execute_steps: int | None = None
    max_steps: int = 40
    waypoint_duration_s: float | None = None
    keypoints: str = "head"

    def __post_init__(self) -> None:
        for name in ("context_frames", "max_steps"):
            v = getattr(self, name)
            if name == "context_frames" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"mpc.{name}: expected a positive integer{' or null' if name == 'context_frames' else ''}, "
                                  f"found {v!r}")
        if self.execute_steps is not None and (isinstance(self.execute_steps, bool)
                                               or not isinstance(self.execute_steps, int) or self.execute_steps < 1):
            raise ConfigError(f"mpc.execute_steps: expected a positive integer or null, found {self.execute_steps!r}")
        fp = self.frame_period_s
        if isinstance(fp, bool) or not isinstance(fp, (int, float)) or not math.isfinite(fp) or fp < 0:
            raise ConfigError(f"mpc.frame_period_s: expected a number of seconds >= 0, found {fp!r}")
        wd = self.waypoint_duration_s
        if wd is not None and (isinstance(wd, bool) or not isinstance(wd, (int, float)) or not math.isfinite(wd)
                               or wd <= 0):
            raise ConfigError(f"mpc.waypoint_duration_s: expected a number of seconds > 0 or null, found {wd!r}")
        if self.keypoints not in KEYPOINT_SOURCES:
            raise ConfigError(f"mpc.keypoints: expected one of {list(KEYPOINT_SOURCES)}, found {self.keypoints!r}")


def load_mpc_config(file: str | Path = CONFIG_FILE) -> MPCConfig:
    return load_section(MPCConfig, file, "mpc")


def planner_profiles(file: str | Path = CONFIG_FILE) -> dict[str, dict]:
    """Section ``planner_profiles`` of ``config/mpc.yaml``: name -> changes to ``config/planner.yaml``."""
    data = load_yaml(file)
    profiles = data.get("planner_profiles")
    if not isinstance(profiles, dict) or not profiles:
        raise ConfigError(f"{Path(file).name}: missing section 'planner_profiles' (name -> planner.yaml changes)")
    for name, changes in profiles.items():
        if not isinstance(changes, dict):
            raise ConfigError(f"{Path(file).name}:planner_profiles.{name}: expected a mapping of planner.yaml "
                              f"sections to changed fields, found {changes!r}")
    return profiles


def mpc_planner_config(task: str | None = None, profile: str | None = None, method: str | None = None,
                       device: str | None = None, file: str | Path = CONFIG_FILE,
                       planner_file: str | Path | None = None) -> PlannerConfig:
    """``config/planner.yaml`` (or ``planner_file``) with the task's overrides, then the ``profile``'s changes
    (``planner_profiles`` in ``config/mpc.yaml``: ``paper``, ``cpu``, ``quick``), then ``method`` (cem | mppi) and
    ``device``."""
    cfg = load_planner_config(task) if planner_file is None else load_planner_config(task, file=planner_file)
    if profile is not None:
        profiles = planner_profiles(file)
        if profile not in profiles:
            raise ConfigError(f"unknown planner profile {profile!r}; {Path(file).name} defines {sorted(profiles)}")
        cfg = cfg.replace(**profiles[profile])
    if method is not None:
        cfg = cfg.replace(planner={"method": method})
    if device is not None:
        cfg = cfg.replace(runtime={"device": device})
    return cfg


@dataclass
class MPCStep:
    waypoints: np.ndarray  # (k, 23) joint waypoints to execute now (k = execute_steps), within joint limits
    plan: np.ndarray  # (T, 23) the full best plan
    cost: float
    predicted_keypoints: np.ndarray | None  # (T, 12, 2) pixels in the model's input image (NaN = unknown) or None
    planning_time_s: float
    info: dict  # replan index, warm start, per-iteration elite costs, cost terms, timings, prediction error

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (arrays as lists, NaN keypoints as null)."""
        kp = None
        if self.predicted_keypoints is not None:
            kp = [[[None if not math.isfinite(v) else round(float(v), 3) for v in p] for p in s]
                  for s in self.predicted_keypoints]
        return {"waypoints": np.round(self.waypoints, 6).tolist(), "plan": np.round(self.plan, 6).tolist(),
                "cost": self.cost, "predicted_keypoints": kp, "planning_time_s": self.planning_time_s,
                "info": self.info}


@dataclass
class _Frame:
    latent: Tensor  # (P, d) on the planner's device
    t: float
    joints: np.ndarray  # (23,)


def check_image(image: Any, what: str) -> np.ndarray:
    """An RGB frame ``(H, W, 3)`` uint8 with H, W > 0, or ValueError saying what was found."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{what}: expected a numpy array (H, W, 3) uint8, found {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{what}: expected dtype uint8 (0..255 RGB), found {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what}: expected shape (H, W, 3), found {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{what}: empty image (shape {image.shape})")
    return image


def _check_joints(joints: Any) -> np.ndarray:
    try:
        q = np.asarray(joints, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"observe: joints must be {NUM_ROBOT_JOINTS} numbers, found {joints!r}") from exc
    if q.shape != (NUM_ROBOT_JOINTS,):
        raise ValueError(f"observe: joints must have shape ({NUM_ROBOT_JOINTS},), found {q.shape}")
    bad = np.flatnonzero(~np.isfinite(q))
    if bad.size:
        raise ValueError(f"observe: joints must be finite, found {q[bad].tolist()} at index(es) {bad.tolist()}")
    return q


def _check_goal_keypoints(kp: Any) -> np.ndarray:
    arr = np.asarray(kp, dtype=np.float64)
    if arr.shape == (NUM_HEATMAPS, 2):
        arr = arr[RIGHT_HEATMAPS]
    if arr.shape != (NUM_HAND_POINTS, 2):
        raise ValueError(f"set_goal: goal_keypoints must be ({NUM_HAND_POINTS}, 2) right wrist + 5 tips or "
                         f"({NUM_HEATMAPS}, 2) pixels, found shape {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError("set_goal: goal_keypoints must be finite pixels or NaN (unknown), found inf")
    return arr


class GoalImageMPC:
    """The goal-image MPC loop (module doc). ``model`` must be the planner's model."""

    def __init__(self, model: WorldModel, planner: Planner, config: MPCConfig | None = None) -> None:
        if planner.model is not model:
            raise ValueError("GoalImageMPC: the planner plans with a different WorldModel than the one given")
        config = load_mpc_config() if config is None else config
        if not isinstance(config, MPCConfig):
            raise ValueError(f"GoalImageMPC: config must be an MPCConfig, found {type(config).__name__}")
        max_ctx = model.predictor.cfg.max_context
        if config.context_frames is None:
            config = replace(config, context_frames=max_ctx)
        if config.context_frames > max_ctx:
            raise ConfigError(f"mpc.context_frames ({config.context_frames}) exceeds the predictor's max_context "
                              f"({max_ctx})")
        self.model = model
        self._config_for_task: Callable[[str], PlannerConfig] | None = None
        self._planners: dict[str | None, Planner] = {}
        self.planner = planner
        self.config = self._resolve(config, planner)
        self.task: str | None = None
        self.encoder_calls = 0
        self.reset()

    # ------------------------------------------------------------------------------------------ construction
    @staticmethod
    def _resolve(config: MPCConfig, planner: Planner) -> MPCConfig:
        k = planner.config.planner.execute_steps
        if config.execute_steps is not None and config.execute_steps != k:
            raise ConfigError(f"mpc.execute_steps ({config.execute_steps}) differs from the planner's "
                              f"planner.execute_steps ({k}), by which its warm start shifts; set one of them "
                              "(GoalImageMPC.from_checkpoint applies mpc.execute_steps to the planner config)")
        return replace(config, execute_steps=k)

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str | Path, planner_config: PlannerConfig | None = None,
                        mpc_config: MPCConfig | None = None, device: str | None = "cpu", task: str | None = None,
                        profile: str | None = None) -> "GoalImageMPC":
        """Load a world-model checkpoint folder and build the planner.

        ``planner_config``: default ``config/planner.yaml`` with the overrides of ``task`` (and of ``profile``
        from ``config/mpc.yaml``); without an explicit ``planner_config``, :meth:`set_goal` with another task
        switches to that task's overrides (one planner per task, built on first use). ``device`` (cpu, cuda,
        cuda:N, auto) replaces ``runtime.device``; None keeps the config's."""
        mpc_config = load_mpc_config() if mpc_config is None else mpc_config
        if task is not None and task not in TASK_NAMES:
            raise ValueError(f"task must be one of {TASK_NAMES}, found {task!r}")

        def finish(cfg: PlannerConfig) -> PlannerConfig:
            changes: dict[str, dict] = {}
            if device is not None:
                changes["runtime"] = {"device": device}
            if mpc_config.execute_steps is not None:
                changes["planner"] = {"execute_steps": mpc_config.execute_steps}
            return cfg.replace(**changes) if changes else cfg

        explicit = planner_config is not None
        cfg = finish(planner_config if explicit else mpc_planner_config(task, profile))
        model = WorldModel.load(checkpoint_dir, map_location="cpu")
        planner = Planner(model, cfg)
        mpc = cls(model, planner, mpc_config)
        mpc.task = task
        mpc._planners[task] = planner
        if not explicit:
            mpc._config_for_task = lambda t: finish(mpc_planner_config(t, profile))
        return mpc

    # ------------------------------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.planner.device

    @property
    def execute_steps(self) -> int:
        return int(self.config.execute_steps)

    @property
    def waypoint_duration_s(self) -> float:
        """Seconds each executed waypoint is given (``mpc.waypoint_duration_s``, default the planner's step_dt)."""
        wd = self.config.waypoint_duration_s
        return float(self.planner.config.planner.step_dt if wd is None else wd)

    @property
    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        return (self.planner.joint_low.detach().cpu().double().numpy(),
                self.planner.joint_high.detach().cpu().double().numpy())

    @property
    def goal_keypoints(self) -> np.ndarray | None:
        """The goal's 12 hand keypoints ``(12, 2)`` (model-image pixels, NaN = unknown) or None before a goal."""
        return None if self._goal_kp12 is None else self._goal_kp12.copy()

    @torch.no_grad()
    def observation_cost(self) -> float:
        """Latent distance of the newest observed frame to the goal (the cost's latent term of "now"); NaN before
        a goal and a frame."""
        if self._goal is None or not self._frames:
            return math.nan
        latent = self._frames[-1].latent
        return float(latent_distance(latent[None], self._goal[None].to(latent.dtype))[0])

    @property
    def context_times(self) -> list[float]:
        return [f.t for f in self._frames]

    @property
    def prediction_errors(self) -> list[float]:
        """Per replan since the goal was set: latent error of the predicted frame against the observed one."""
        return list(self._prediction_errors)

    def keypoints_to_image(self, uv: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
        """Pixels ``(..., 2)`` of the model's input image -> pixels of a camera image of size ``image_hw`` (the
        inverse of the encoder's resize + centre crop)."""
        g = self.model.encoder.preprocess.geometry(tuple(image_hw))
        sx, sy = g.scale_xy
        uv = np.asarray(uv, dtype=np.float64)
        return (uv + np.array([g.left, g.top])) / np.array([sx, sy])

    # ------------------------------------------------------------------------------------------ the loop
    def reset(self) -> None:
        """Forget the goal, the context frames, the warm start and the pending prediction."""
        self._goal: Tensor | None = None
        self._goal_uv: np.ndarray | None = None
        self._goal_kp12: np.ndarray | None = None
        self._goal_depth: np.ndarray | None = None
        self._frames: list[_Frame] = []
        self._pending: tuple[Tensor, float, float] | None = None  # predicted latent, its time, time planned at
        self._last_error: dict[str, float] | None = None
        self._prediction_errors: list[float] = []
        self._replans = 0
        self.last_predicted_latents: Tensor | None = None
        for p in self._planners.values():
            p.reset()
        self.planner.reset()

    def _encode(self, image: np.ndarray) -> Tensor:
        self.encoder_calls += 1
        return self.planner.encode(image[None])[0]

    def _switch_task(self, task: str) -> None:
        if task == self.task or self._config_for_task is None:
            self.task = task
            return
        if task not in self._planners:
            self._planners[task] = Planner(self.model, self._config_for_task(task))
        self.planner = self._planners[task]
        self.config = self._resolve(replace(self.config, execute_steps=None), self.planner)
        self.task = task

    @torch.no_grad()
    def set_goal(self, goal_image: np.ndarray, task: str, goal_keypoints: np.ndarray | None = None,
                 goal_depth: np.ndarray | None = None) -> None:
        """Encode the goal image once; clear the context frames and the warm start. ``goal_keypoints``: the
        goal's hand pixels in the model's input image (``(6, 2)`` right wrist + 5 tips or all ``(12, 2)``, NaN =
        unknown); default: read from the goal latent by the hand head. ``goal_depth``: their camera depths in metres
        (``(6,)`` or ``(12,)``) for the planner's depth term (``cost.depth_weight``); default: read by the world
        model's hand depth head when the task's cost uses the term."""
        check_image(goal_image, "set_goal: goal_image")
        if task not in TASK_NAMES:
            raise ValueError(f"set_goal: task must be one of {TASK_NAMES}, found {task!r}")
        uv = None if goal_keypoints is None else _check_goal_keypoints(goal_keypoints)
        depth = None if goal_depth is None else check_goal_depth(goal_depth, "set_goal: goal_depth")
        self.reset()
        self._switch_task(task)
        goal = self._encode(goal_image)
        head12 = self.model.hand_keypoints(goal[None])[0][0].float().cpu().double().numpy()  # model dtype
        if uv is None:
            uv = head12[RIGHT_HEATMAPS].copy()
            kp12 = head12
        else:
            kp12 = np.full((NUM_HEATMAPS, 2), np.nan)
            given = np.asarray(goal_keypoints, dtype=np.float64)
            if given.shape == (NUM_HEATMAPS, 2):
                kp12 = given.copy()
            else:
                kp12[RIGHT_HEATMAPS] = uv
        if depth is None and self.planner.config.uses_goal_depth and self.planner.has_depth_head:
            depth = self.planner.goal_depths(goal).cpu().double().numpy()
        self._goal, self._goal_uv, self._goal_kp12, self._goal_depth = goal, uv, kp12, depth

    @torch.no_grad()
    def observe(self, image: np.ndarray, joints: np.ndarray, t: float) -> None:
        """Encode one camera frame (once) and keep it with the joints and its capture time ``t`` (seconds)."""
        check_image(image, "observe: image")
        q = _check_joints(joints)
        try:
            t = float(t)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"observe: t must be a time in seconds, found {t!r}") from exc
        if not math.isfinite(t):
            raise ValueError(f"observe: t must be finite, found {t}")
        if self._frames and t < self._frames[-1].t:
            raise ValueError(f"observe: time went backwards: t = {t:.6f} s is before the previous observation's "
                             f"{self._frames[-1].t:.6f} s")
        latent = self._encode(image)
        frame = _Frame(latent, t, q)
        if self._pending is not None and t >= self._pending[1] - 0.25 * (self._pending[1] - self._pending[2]):
            pred, t_pred, t_planned = self._pending
            err = float(latent_distance(pred[None], latent[None].to(pred.dtype))[0])
            self._last_error = {"prediction_error": err, "predicted_dt_s": t_pred - t_planned,
                                "actual_dt_s": t - t_planned}
            self._prediction_errors.append(err)
            self._pending = None
        fr = self._frames
        if fr and t == fr[-1].t:
            fr[-1] = frame  # the same instant observed again: the newer frame replaces it
        elif len(fr) >= 2 and fr[-1].t - fr[-2].t < self.config.frame_period_s - _TIME_TOLERANCE_S:
            fr[-1] = frame  # the newest frame is too close to the one kept before it: it gives way
        else:
            fr.append(frame)
        del fr[:-self.config.context_frames]

    def observation(self) -> PlanObservation:
        """What the next replan plans from: the kept context latents, their times, the newest joints, the goal."""
        if self._goal is None:
            raise MPCNotReady("plan: no goal set (call set_goal(goal_image, task) first)")
        if not self._frames:
            raise MPCNotReady("plan: no camera frame observed since the goal was set (call observe(image, joints, "
                              "t) first)")
        return PlanObservation(context=torch.stack([f.latent for f in self._frames]),
                               times=np.array([f.t for f in self._frames]), joints=self._frames[-1].joints,
                               goal=self._goal, goal_keypoints=self._goal_uv, goal_depth=self._goal_depth)

    @torch.no_grad()
    def plan(self) -> MPCStep:
        """One replan from the kept context toward the goal; returns the waypoints to execute now."""
        if self._goal is None:
            raise MPCNotReady("plan: no goal set (call set_goal(goal_image, task) first)")
        if not self._frames:
            raise MPCNotReady("plan: no camera frame observed since the goal was set (call observe(image, joints, "
                              "t) first)")
        t0, cpu0 = time.perf_counter(), time.thread_time()
        p = self.planner
        newest = self._frames[-1]
        state = p.prepare(self.observation())
        result: PlanResult = p.plan(state)
        t1 = time.perf_counter()
        best = torch.as_tensor(result.waypoints, dtype=torch.float32, device=p.device)
        kin = p.kin.evaluate(state.joints, best[None], hand=True, orientation=False)
        with p.autocast():
            preds = torch.cat(p.rollout.run(state.rollout, kin.actions.to(p.model_dtype)))  # (T, P, d)
            kp = None
            if self.config.keypoints == "head":
                kp = self.model.hand_keypoints(preds)[0].float().cpu().double().numpy()
        fk_uv = kin.hand_uv[0].float().cpu().double().numpy()  # (T, 6, 2)
        if self.config.keypoints == "fk":
            kp = np.full((fk_uv.shape[0], NUM_HEATMAPS, 2), np.nan)
            kp[:, RIGHT_HEATMAPS] = fk_uv
        k = self.execute_steps
        dt = p.config.planner.step_dt
        self._pending = (preds[k - 1].detach(), newest.t + k * dt, newest.t)
        self.last_predicted_latents = preds.detach()
        p._sync()
        t2 = time.perf_counter()
        low, high = self.joint_limits
        plan = np.clip(result.waypoints, low, high)
        info = {
            "task": self.task, "replan": self._replans, "warm_started": result.warm_started,
            "method": p.config.planner.method, "elite_costs": result.elite_costs,
            "iterations": [asdict(s) for s in result.iterations], "terms": result.terms,
            "hand_source": result.hand_source, "fk_keypoints": np.round(fk_uv, 3).tolist(),
            "context_frames": len(self._frames), "context_times": [f.t for f in self._frames],
            "timing": {**result.timing, "prepare_s": state.seconds, "predict_best_s": t2 - t1, "total_s": t2 - t0,
                       "thread_cpu_s": time.thread_time() - cpu0},  # CPU time of the planning thread itself
            "prediction_error": None, "predicted_dt_s": None, "actual_dt_s": None,
        }
        if self._last_error is not None:
            info.update(self._last_error)
            self._last_error = None
        self._replans += 1
        return MPCStep(waypoints=plan[:k].copy(), plan=plan, cost=float(result.cost), predicted_keypoints=kp,
                       planning_time_s=t2 - t0, info=info)


def build_mpc(model: WorldModel, task: str | None = None, profile: str | None = None, method: str | None = None,
              device: str | None = None, mpc_config: MPCConfig | None = None,
              planner_file: str | Path | None = None) -> GoalImageMPC:
    """A :class:`GoalImageMPC` on an already loaded ``model`` (several tasks can share one model), with the planner
    config composed by :func:`mpc_planner_config` (from ``planner_file`` instead of ``config/planner.yaml`` when
    given) and ``mpc.execute_steps`` applied to it."""
    mpc_config = load_mpc_config() if mpc_config is None else mpc_config
    cfg = mpc_planner_config(task, profile, method, device, planner_file=planner_file)
    if mpc_config.execute_steps is not None:
        cfg = cfg.replace(planner={"execute_steps": mpc_config.execute_steps})
    mpc = GoalImageMPC(model, Planner(model, cfg), mpc_config)
    mpc.task = task
    return mpc
