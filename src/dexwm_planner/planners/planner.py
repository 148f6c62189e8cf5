"""Goal-image MPC planner: CEM or MPPI over joint waypoints, costed by rolling the world model forward.

One replan (:meth:`Planner.plan`):

1. the context frames' latents (encoded ONCE by the caller, e.g. with :meth:`Planner.encode`; a camera frame
   is encoded once when it arrives) go through the predictor's context encoder once: per-block keys/values
   shared by every sample and iteration (:meth:`Planner.prepare`);
2. each optimiser iteration is one batched program: sample ``(N, T, 23)`` joint waypoints (clamped to the
   joint limits) -> one FK call for all ``1 + N * T`` joint vectors -> keypoint actions ``(N, T, 132)`` ->
   rollout of all N samples from the shared context (chunks of ``runtime.chunk_size``; only per-sample work
   per sample, see :mod:`.rollout`; fewer per chunk when ``runtime.memory_budget_gb`` needs it) -> costs
   (:mod:`.cost`) -> elites / weights;
3. the best sequence is returned with its cost terms, predicted hand keypoints, per-iteration statistics and
   timings; with ``warm_start`` the next replan starts from it shifted by ``execute_steps`` waypoints.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dexwm_model.kinematics.panda_allegro import NUM_ROBOT_JOINTS, PandaAllegroFK
from dexwm_model.world_model import WorldModel
from dexwm_planner.planners.config import PlannerConfig, load_planner_config
from dexwm_planner.planners.cost import (
    depth_distance,
    focus_weights,
    hand_distance,
    latent_distance,
    step_weights,
    total_cost,
)
from dexwm_planner.planners.approach import approach_violation, goal_rays
from dexwm_planner.planners.goal_pose import (
    approach_target,
    goal_points,
    keep_hand_until_near,
    proposal_sequence,
    solve_goal_pose,
)
from dexwm_planner.planners.workspace import PlanWorkspace, workspace_floor
from dexwm_planner.planners.kinematics import (
    NUM_HAND_POINTS,
    RIGHT_HEATMAPS,
    CameraSetup,
    PlanKinematics,
    sim_camera,
    sim_joint_limits,
)
from dexwm_planner.planners.optimizer import IterationStats, SamplingOptimizer
from dexwm_planner.planners.rollout import CachedRollout, RolloutPlan

NUM_ARM_JOINTS = 7
log = logging.getLogger(__name__)


def check_goal_depth(depth: Any, where: str) -> np.ndarray:
    """Goal hand depths ``(6,)`` (or all 12 heat-map keypoints' ``(12,)``) -> the right hand's ``(6,)`` float64;
    ``ValueError`` naming ``where`` unless each is a positive depth in metres or NaN (unknown)."""
    arr = (depth.detach().cpu().double().numpy() if isinstance(depth, Tensor)
           else np.asarray(depth, dtype=np.float64))
    if arr.shape == (2 * NUM_HAND_POINTS,):
        arr = arr[RIGHT_HEATMAPS]
    known = arr[np.isfinite(arr)]
    if arr.shape != (NUM_HAND_POINTS,) or np.isinf(arr).any() or (known <= 0).any():
        raise ValueError(f"{where}: expected ({NUM_HAND_POINTS},) or ({2 * NUM_HAND_POINTS},) positive camera depths "
                         f"of the right wrist + 5 tips in metres (NaN = unknown), found shape {arr.shape}: "
                         f"{arr.tolist()}")
    return arr


@dataclass
class PlanObservation:
    """What one replan needs. ``context``: latents ``(C, P, d)`` of the C context frames, oldest first (the
    newest is the current camera frame); ``times``: their capture times ``(C,)`` in seconds; ``joints``: the 23
    current joint positions; ``goal``: the goal image's latent ``(P, d)`` (encoded once per episode);
    ``goal_keypoints``: optional goal pixels of the right wrist + 5 tips ``(6, 2)`` (or all 12 heat-map
    keypoints ``(12, 2)``; NaN = unknown), otherwise read from the goal latent by the hand head when the cost
    needs them; ``mask``: optional ``(C,)`` bool, False = frame missing; ``goal_depth``: optional camera depths
    (m) of those goal keypoints ``(6,)`` (or ``(12,)``) for the depth term, otherwise read by the world model's
    hand depth head."""

    context: Tensor
    times: Any
    joints: Any
    goal: Tensor
    goal_keypoints: Any = None
    mask: Any = None
    goal_depth: Any = None


@dataclass
class PlanResult:
    waypoints: np.ndarray  # (T, 23) the best joint waypoint sequence found
    cost: float
    terms: dict[str, list[float]]  # per step: latent, hand (pixels), orientation (1 - cos), weight
    hand_keypoints: np.ndarray  # (T, 6, 2) right wrist + 5 tips of the best plan, pixels of the model's image
    hand_source: str  # where hand_keypoints come from: "fk" (projected FK) or "head" (hand head on latents)
    iterations: list[IterationStats]
    mean: np.ndarray  # (T, 23) the final sampling distribution
    std: np.ndarray
    timing: dict[str, Any]
    replan: int  # index of this replan since the last reset()
    warm_started: bool

    @property
    def elite_costs(self) -> list[list[float]]:
        return [s.elite_costs for s in self.iterations]

    def to_dict(self) -> dict[str, Any]:
        return {"waypoints": self.waypoints.tolist(), "cost": self.cost, "terms": self.terms,
                "hand_keypoints": self.hand_keypoints.tolist(), "hand_source": self.hand_source,
                "iterations": [asdict(s) for s in self.iterations], "timing": self.timing,
                "replan": self.replan, "warm_started": self.warm_started}


@dataclass
class ReplanState:
    """What all samples and iterations of one replan share."""

    rollout: RolloutPlan
    goal: Tensor  # (1, P, d)
    goal_uv: Tensor | None  # (6, 2) float32, NaN = unknown
    joints: Tensor  # (23,) float32
    weights: Tensor  # (T,) float64
    seconds: float = 0.0
    goal_objects: Tensor | None = None  # (M, 2) float32 object centres on the goal image, NaN = not shown
    goal_rays: tuple[Tensor, Tensor] | None = None  # camera centre (3,), directions (6, 3) through goal_uv
    token_weights: Tensor | None = None  # (P,) of the focused latent term (None: the plain mean over tokens)
    goal_depth: Tensor | None = None  # (6,) camera depths (m) of the goal's hand keypoints, NaN = unknown


@dataclass
class CostDetails:
    total: Tensor  # (N,)
    latent: Tensor  # (N, T)
    hand: Tensor | None  # (N, T)
    palm_down: Tensor | None  # (N, T)
    hand_uv: Tensor | None  # (N, T, 6, 2) the keypoints the hand term compared
    fk_uv: Tensor | None = field(default=None)  # (N, T, 6, 2) projected FK (always with details)
    objects: Tensor | None = None  # (N, T) the object term (with cost.object_weight > 0)
    approach: Tensor | None = None  # (N, T) the approach term (with cost.approach_weight > 0)
    depth: Tensor | None = None  # (N, T) the depth term (with cost.depth_weight > 0)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"runtime.device is {name!r} but this machine has no CUDA device")
    return dev


def cpu_has_bf16_matmul() -> bool:
    """Does this CPU multiply bfloat16 matrices in hardware (AMX tiles or AVX-512 BF16)? There, bf16 autocast
    runs the predictor's linear layers ~7x faster than fp32 on one core (a 2048 x 192 x 768 product: ~1,100-1,400
    against ~150 GFLOP/s); elsewhere bf16 is emulated and slower than fp32."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    probe_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    try:
        return bool((probe is not None and probe()) or (probe_bf16 is not None and probe_bf16()))
    except RuntimeError:
        return False


def resolve_dtype(name: str, device: torch.device) -> str:
    """``runtime.dtype`` as used: ``auto`` is bfloat16 (autocast) on CUDA and on CPUs with hardware bf16 matrix
    products (:func:`cpu_has_bf16_matmul`), float32 elsewhere."""
    if name != "auto":
        return name
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16_matmul()):
        return "bfloat16"
    return "float32"


class Planner:
    """CEM / MPPI goal-image planner over the 23 joints (see module doc).

    ``model``: the world model (moved to the configured device; its projection, predictor and hand head are
    converted to the compute dtype: float32, or float64 with ``runtime.dtype: float64``);
    ``config``: default ``config/planner.yaml``; ``fk``: default the scene's chain; ``camera``: default the
    simulated camera mapped into the encoder's crop; ``joint_limits``: ``(low, high)``, default the simulated
    robot's actuator ranges.
    """

    def __init__(self, model: WorldModel, config: PlannerConfig | None = None, *, fk: PandaAllegroFK | None = None,
                 camera: CameraSetup | None = None, joint_limits: tuple[Any, Any] | None = None) -> None:
        self.config = config if config is not None else load_planner_config()
        rt = self.config.runtime
        self.device = resolve_device(rt.device)
        dtype = resolve_dtype(rt.dtype, self.device)
        self.autocast_dtype = torch.bfloat16 if dtype == "bfloat16" else None
        self.model_dtype = torch.float64 if dtype == "float64" else torch.float32
        # the predictor side computes in model_dtype; the frozen encoder keeps its own configured dtype
        self.model = model.to(self.device).eval()
        if self.config.cost.uses_objects and model.object_head is None:
            raise ValueError("cost.object_weight > 0 needs a world model with an object head (this checkpoint has "
                             "none: train one with `dexwm train world-model --section cpu_fast_objects`)")
        for part in (model.projection, model.predictor, model.hand_head, model.object_head, model.hand_depth_head):
            if part is not None:
                part.to(self.model_dtype)
        fk = PandaAllegroFK.default() if fk is None else fk
        fk = fk.to(self.device)
        self.camera = camera if camera is not None else sim_camera(model.encoder.preprocess)
        self.kin = PlanKinematics(fk, self.camera)
        cost = self.config.cost
        self.workspace = (PlanWorkspace.from_safety_config(fk, cost.workspace_margin) if cost.workspace_weight > 0
                          else None)
        self.floor = workspace_floor() if cost.uses_approach else 0.0  # the table under the approach term
        low, high = sim_joint_limits() if joint_limits is None else joint_limits
        low = torch.as_tensor(np.asarray(low, dtype=np.float64), dtype=torch.float32)
        high = torch.as_tensor(np.asarray(high, dtype=np.float64), dtype=torch.float32)
        if tuple(low.shape) != (NUM_ROBOT_JOINTS,) or tuple(high.shape) != (NUM_ROBOT_JOINTS,):
            raise ValueError(f"joint_limits: expected two vectors of {NUM_ROBOT_JOINTS} values, found "
                             f"{tuple(low.shape)} and {tuple(high.shape)}")
        pc = self.config.planner
        arm = torch.arange(NUM_ROBOT_JOINTS) < NUM_ARM_JOINTS
        self.init_std = torch.where(arm, pc.init_std_arm, pc.init_std_hand).to(torch.float32)
        floor = torch.where(arm, pc.std_floor_arm, pc.std_floor_hand).to(torch.float32)
        self.optimizer = SamplingOptimizer(pc, low.to(self.device), high.to(self.device), floor.to(self.device))
        self.rollout = CachedRollout(self.model.predictor)
        self.has_depth_head = model.hand_depth_head is not None
        if self.config.uses_goal_depth and not self.has_depth_head:
            log.warning("cost.depth_weight / planner.proposal_fraction need the goal's hand depths, and this world "
                        "model has no hand depth head (`dexwm train hand-depth`): they apply only when goal depths "
                        "are given (PlanObservation.goal_depth); otherwise the planner plans without them")
        self.chunk_size = self._chunk_size()
        self._chunk_fn = torch.compile(self._rollout_chunk, dynamic=False) if rt.compile else self._rollout_chunk
        self._previous: Tensor | None = None
        self._replans = 0
        self._goal_poses: dict[str, Tensor] = {}
        self._goal_pose_error = float("nan")

    # ------------------------------------------------------------------------------------------- helpers
    @property
    def horizon(self) -> int:
        return self.config.planner.horizon

    @property
    def joint_low(self) -> Tensor:
        return self.optimizer.low

    @property
    def joint_high(self) -> Tensor:
        return self.optimizer.high

    @property
    def dtype_label(self) -> str:
        """What the predictor computes in, for reports: ``bfloat16 autocast``, ``float32`` or ``float64``."""
        return "bfloat16 autocast" if self.autocast_dtype is not None else str(self.model_dtype).removeprefix("torch.")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def sample_bytes(self) -> int:
        """Estimated working memory of one sample's rollout: the keys/values of its predicted frames (kept for
        the later steps) plus one block's activations and the frames in flight."""
        p = self.model.predictor
        c = p.cfg
        kv_bytes = 2 if self.autocast_dtype is not None else torch.finfo(self.model_dtype).bits // 8
        act_bytes = torch.finfo(self.model_dtype).bits // 8
        own_kv = 2 * c.depth * max(0, self.horizon - 1) * p.num_tokens * c.width * kv_bytes
        acts = p.num_tokens * ((12 + 2 * c.mlp_ratio) * c.width + 8 * p.input_dim) * act_bytes
        return int(own_kv + acts)

    def _chunk_size(self) -> int:
        rt = self.config.runtime
        fit = int(rt.memory_budget_gb * 2**30 // max(1, self.sample_bytes()))
        return max(1, min(rt.chunk_size, fit))

    def reset(self) -> None:
        """Start a new episode: forget the warm start and the replan count."""
        self._previous = None
        self._replans = 0
        self._goal_poses = {}
        self._goal_pose_error = float("nan")

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def encode(self, images: Any) -> Tensor:
        """Camera frames ``(B, H, W, 3)`` -> latents ``(B, P, d)`` (one encoder call; the encoder runs in its own
        dtype, outside the predictor's bf16 autocast: one frame per replan, and the goal every plan is scored
        against)."""
        return self.model.encode(images).to(self.model_dtype)

    def observe(self, images: Any, times: Any, joints: Any, goal: Tensor, goal_keypoints: Any = None,
                mask: Any = None) -> PlanObservation:
        """A :class:`PlanObservation` from the context camera frames ``(C, H, W, 3)`` (encoded here, in one call)
        and the goal latent (encode the goal image once per episode with :meth:`encode`). A live loop that keeps
        its frames' latents encodes only the newest frame per replan and builds the observation itself."""
        return PlanObservation(context=self.encode(images), times=times, joints=joints, goal=goal,
                               goal_keypoints=goal_keypoints, mask=mask)

    @torch.no_grad()
    def goal_keypoints(self, goal: Tensor) -> Tensor:
        """The right wrist + 5 tips ``(6, 2)`` read from a goal latent ``(P, d)`` by the hand head."""
        uv, _ = self.model.hand_keypoints(goal.to(self.device, self.model_dtype)[None])  # model dtype: once per goal
        return uv[0, RIGHT_HEATMAPS].float()

    @torch.no_grad()
    def goal_depths(self, goal: Tensor) -> Tensor:
        """The camera depths (m) ``(6,)`` of the right wrist + 5 tips read from a goal latent ``(P, d)`` by the
        world model's hand depth head (the depth term's goal when none is given)."""
        if not self.has_depth_head:
            raise ValueError("cost.depth_weight > 0 needs the goal's hand depths: give observation.goal_depth, or use "
                             "a world model with a hand depth head (`dexwm train hand-depth`)")
        # in the model dtype, not bf16 autocast (bf16 would round depths of ~1 m to 4-8 mm)
        depth = self.model.hand_depths(goal.to(self.device, self.model_dtype)[None])[0, RIGHT_HEATMAPS].float()
        return torch.where(depth > 0, depth, torch.full_like(depth, math.nan))  # a depth <= 0 says nothing: unknown

    @torch.no_grad()
    def goal_objects(self, goal: Tensor) -> Tensor:
        """The object centres ``(M, 2)`` the object head reads on a goal latent ``(P, d)``; NaN for objects whose
        heat-map peak is below ``cost.object_min_confidence`` (not in the goal image)."""
        uv, conf = self.model.object_keypoints(goal.to(self.device, self.model_dtype)[None])
        uv, conf = uv[0].float(), conf[0].float()
        return torch.where((conf >= self.config.cost.object_min_confidence)[:, None], uv, torch.full_like(uv, math.nan))

    def initial_distribution(self, joints: Tensor) -> tuple[Tensor, Tensor, bool]:
        """Mean and std ``(T, 23)`` of the first iteration: the previous plan shifted by ``execute_steps``
        waypoints (warm start) or the current joints held for T steps; std = the initial std."""
        t, k = self.horizon, self.config.planner.execute_steps
        std = self.init_std.to(self.device).expand(t, -1).clone()
        prev = self._previous
        if self.config.planner.warm_start and prev is not None and prev.shape[0] == t:
            mean = torch.cat([prev[k:], prev[-1:].expand(k, -1)], dim=0)
            return mean.clone(), std, True
        return joints.to(torch.float32).expand(t, -1).clone(), std, False

    def goal_proposal(self, state: ReplanState) -> Tensor | None:
        """The goal-pose line ``(T, 23)`` (:mod:`.goal_pose`) for this replan, or None (``proposal_fraction`` 0, or
        no goal keypoints with depths). Each target pose (lifted, goal) is solved once per goal and refined from
        there each replan."""
        pc = self.config.planner
        if pc.proposal_fraction <= 0 or state.goal_uv is None or state.goal_depth is None:
            return None
        points = goal_points(state.goal_uv, state.goal_depth, self.camera)
        hand = self.kin.hand_world_points(state.joints.to(torch.float64))
        target, lifted = approach_target(points, hand, pc.proposal_lift, pc.proposal_align)
        key = "lifted" if lifted else "goal"
        start = self._goal_poses.get(key, self._goal_poses.get("goal", state.joints))
        q, err = solve_goal_pose(self.kin, target, start, self.joint_low, self.joint_high)
        self._goal_poses[key], self._goal_pose_error = q.to(torch.float32), err
        current = state.joints.to(torch.float32)
        aim = keep_hand_until_near(self._goal_poses[key], current, hand, points, pc.proposal_close_within)
        return proposal_sequence(current, aim, self.horizon, pc.proposal_step)

    # ------------------------------------------------------------------------------------------- replan
    def _check(self, obs: PlanObservation) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
        p = self.model.predictor
        ctx = obs.context
        if not isinstance(ctx, Tensor) or ctx.dim() != 3 or tuple(ctx.shape[1:]) != (p.num_tokens, p.input_dim):
            raise ValueError(f"observation.context: expected latents (C, {p.num_tokens}, {p.input_dim}), found "
                             f"{tuple(ctx.shape) if isinstance(ctx, Tensor) else type(ctx).__name__}")
        c = ctx.shape[0]
        times = torch.as_tensor(np.asarray(obs.times, dtype=np.float64) if not isinstance(obs.times, Tensor)
                                else obs.times, dtype=torch.float64)
        if tuple(times.shape) != (c,):
            raise ValueError(f"observation.times: expected ({c},) capture times, found shape {tuple(times.shape)}")
        joints = torch.as_tensor(np.asarray(obs.joints, dtype=np.float64) if not isinstance(obs.joints, Tensor)
                                 else obs.joints).to(torch.float32)
        if tuple(joints.shape) != (NUM_ROBOT_JOINTS,) or not bool(torch.isfinite(joints).all()):
            raise ValueError(f"observation.joints: expected {NUM_ROBOT_JOINTS} finite joint positions, found shape "
                             f"{tuple(joints.shape)}")
        goal = obs.goal
        if not isinstance(goal, Tensor) or tuple(goal.shape) != (p.num_tokens, p.input_dim):
            raise ValueError(f"observation.goal: expected a latent ({p.num_tokens}, {p.input_dim}), found "
                             f"{tuple(goal.shape) if isinstance(goal, Tensor) else type(goal).__name__}")
        kp = None
        if obs.goal_keypoints is not None:
            kp = torch.as_tensor(np.asarray(obs.goal_keypoints, dtype=np.float64)
                                 if not isinstance(obs.goal_keypoints, Tensor) else obs.goal_keypoints).float()
            if tuple(kp.shape) == (2 * NUM_HAND_POINTS, 2):
                kp = kp[RIGHT_HEATMAPS]
            if tuple(kp.shape) != (NUM_HAND_POINTS, 2):
                raise ValueError(f"observation.goal_keypoints: expected ({NUM_HAND_POINTS}, 2) or "
                                 f"({2 * NUM_HAND_POINTS}, 2) pixels, found shape {tuple(kp.shape)}")
        depth = None
        if obs.goal_depth is not None:
            depth = torch.as_tensor(check_goal_depth(obs.goal_depth, "observation.goal_depth")).float()
        mask = None
        if obs.mask is not None:
            mask = torch.as_tensor(obs.mask)
            if tuple(mask.shape) != (c,) or mask.dtype != torch.bool:
                raise ValueError(f"observation.mask: expected ({c},) bool, found {mask.dtype} {tuple(mask.shape)}")
        return ctx, times, joints, goal, kp, mask, depth

    @torch.no_grad()
    def prepare(self, obs: PlanObservation) -> ReplanState:
        """Encode the context into the shared cache and fix the goal: once per replan."""
        t0 = time.perf_counter()
        ctx, times, joints, goal, kp, mask, depth = self._check(obs)
        dev, dt = self.device, self.model_dtype
        ctx, goal = ctx.to(dev, dt), goal.to(dev, dt)
        cfg = self.config
        with self.autocast():
            cache = self.model.encode_context(ctx[None], times.to(dev)[None],
                                              None if mask is None else mask.to(dev)[None])
            plan = self.rollout.prepare(cache, ctx[-1:], cfg.planner.step_dt, self.horizon)
        goal_uv = goal_depth = None
        if cfg.cost.uses_hand:
            goal_uv = kp.to(dev) if kp is not None else self.goal_keypoints(goal)
        if cfg.uses_goal_depth:
            if depth is not None:
                goal_depth = depth.to(dev)
            elif self.has_depth_head:
                goal_depth = self.goal_depths(goal)
            # else: no goal depths (warned at construction): the depth term and the proposals stay off
        state = ReplanState(rollout=plan, goal=goal[None], goal_uv=goal_uv, joints=joints.to(dev),
                            weights=step_weights(self.horizon, cfg.cost.step_weight_exponent, dev),
                            goal_objects=self.goal_objects(goal) if cfg.cost.uses_objects else None,
                            goal_rays=goal_rays(goal_uv, self.camera) if cfg.cost.uses_approach else None,
                            token_weights=(focus_weights(goal_uv, self.model.grid, self.camera.image_hw,
                                                         cfg.cost.latent_focus, cfg.cost.latent_focus_sigma_px)
                                           if cfg.cost.uses_focus else None),
                            goal_depth=goal_depth)
        self._sync()
        state.seconds = time.perf_counter() - t0
        return state

    def _rollout_chunk(self, state: ReplanState, actions: Tensor, head: bool,
                       objects: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Roll one chunk of samples out and reduce each predicted frame at once: latent distances ``(n, T)``,
        with ``head`` the hand head's right-hand keypoints ``(n, T, 6, 2)``, with ``objects`` the object term
        ``(n, T)`` (distance of the object head's centres to the goal's)."""
        lat: list[Tensor] = []
        uv: list[Tensor] = []
        obj: list[Tensor] = []

        def on_step(s: int, pred: Tensor) -> None:
            lat.append(latent_distance(pred, state.goal, state.token_weights))
            if head:
                uv.append(self.model.hand_keypoints(pred)[0][:, RIGHT_HEATMAPS].float())
            if objects:
                centres = self.model.object_keypoints(pred)[0].float()
                obj.append(hand_distance(centres, state.goal_objects, self.camera.image_hw))

        self.rollout.run(state.rollout, actions, on_step)
        return (torch.stack(lat, 1), torch.stack(uv, 1) if head else None,
                torch.stack(obj, 1) if objects else None)

    @torch.no_grad()
    def evaluate(self, state: ReplanState, samples: Tensor, details: bool = False) -> Tensor | CostDetails:
        """Costs ``(N,)`` of waypoint sequences ``(N, T, 23)`` (or every term with ``details``)."""
        cfg = self.config.cost
        samples = samples.to(self.device)
        fk_hand = cfg.uses_hand and cfg.hand_source == "fk"
        head = cfg.uses_hand and cfg.hand_source == "head"
        kin = self.kin.evaluate(state.joints, samples, hand=fk_hand or details or cfg.uses_approach or cfg.uses_depth,
                                orientation=cfg.orientation_weight > 0 or details)
        n, cs = samples.shape[0], self.chunk_size
        objects = cfg.uses_objects
        lat_parts, uv_parts, obj_parts = [], [], []
        with self.autocast():
            for i in range(0, n, cs):
                lat, uv, obj = self._chunk_fn(state, kin.actions[i:i + cs].to(self.model_dtype), head, objects)
                lat_parts.append(lat)
                if uv is not None:
                    uv_parts.append(uv)
                if obj is not None:
                    obj_parts.append(obj)
        latent = torch.cat(lat_parts)
        obj_term = torch.cat(obj_parts) if objects else None
        hand_uv = torch.cat(uv_parts) if head else (kin.hand_uv if fk_hand else None)
        hand = hand_distance(hand_uv, state.goal_uv, self.camera.image_hw) if hand_uv is not None else None
        approach = None
        if state.goal_rays is not None:
            approach = approach_violation(kin.hand_xyz, *state.goal_rays, self.floor, cfg.approach_height,
                                          cfg.approach_radius)
        depth = None
        if cfg.uses_depth and state.goal_depth is not None:  # proposals alone need the goal's depths, not the term
            depth = depth_distance(kin.hand_depth, state.goal_depth)
        total = total_cost(cfg, state.weights, latent, hand, kin.palm_down, obj_term, approach, depth)
        if self.workspace is not None:
            total = total + cfg.workspace_weight * self.workspace.violation(state.joints, samples).to(total)
        if not details:
            return total
        return CostDetails(total=total, latent=latent, hand=hand, palm_down=kin.palm_down, hand_uv=hand_uv,
                           fk_uv=kin.hand_uv, objects=obj_term, approach=approach, depth=depth)

    @torch.no_grad()
    def plan(self, obs: PlanObservation | ReplanState, generator: torch.Generator | None = None) -> PlanResult:
        """One replan: the best T joint waypoints toward the goal (see module doc)."""
        t0 = time.perf_counter()
        state = obs if isinstance(obs, ReplanState) else self.prepare(obs)
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(self.config.planner.seed + self._replans)
        mean, std, warm = self.initial_distribution(state.joints)
        t_prop = time.perf_counter()
        proposal = self.goal_proposal(state)
        t1 = time.perf_counter()
        res = self.optimizer.run(lambda x: self.evaluate(state, x), mean, std, generator, proposal=proposal)
        t2 = time.perf_counter()
        det = self.evaluate(state, res.best[None], details=True)
        cfg = self.config.cost
        uses_head = cfg.uses_hand and cfg.hand_source == "head"
        uv = det.hand_uv if uses_head else det.fk_uv
        w = state.weights.tolist()
        terms = {"weight": w, "latent": det.latent[0].tolist(),
                 "hand": det.hand[0].tolist() if det.hand is not None else [],
                 "orientation": (1.0 - det.palm_down[0].double()).tolist(),
                 "objects": det.objects[0].tolist() if det.objects is not None else [],
                 "approach": det.approach[0].tolist() if det.approach is not None else [],
                 "depth": det.depth[0].tolist() if det.depth is not None else []}
        self._sync()
        t3 = time.perf_counter()
        self._previous = res.best.clone()
        result = PlanResult(
            waypoints=res.best.cpu().double().numpy(), cost=res.best_cost, terms=terms,
            hand_keypoints=uv[0].cpu().double().numpy(), hand_source="head" if uses_head else "fk",
            iterations=res.iterations, mean=res.mean.cpu().double().numpy(), std=res.std.cpu().double().numpy(),
            timing={"prepare_s": state.seconds if state is not obs else 0.0, "optimize_s": t2 - t1,
                    "iterations_s": [s.seconds for s in res.iterations], "details_s": t3 - t2,
                    "proposal_s": t1 - t_prop,
                    "goal_pose_error_m": self._goal_pose_error if proposal is not None else None,
                    "total_s": t3 - t0},
            replan=self._replans, warm_started=warm)
        self._replans += 1
        return result
