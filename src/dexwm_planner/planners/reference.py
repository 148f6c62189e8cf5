"""The reference planner's compute pattern ("Where the bar is", MISSION.md), computing the SAME cost.

Deliberately without any reuse, as the released evaluation loop does it:

* every context frame still in the window is re-encoded by the image encoder for every sample, every rollout
  step and every iteration (the images, not cached latents, go in each time);
* every query runs the predictor's plain ``forward`` over the whole window (context frames + predictions so
  far, up to ``max_context``) -- no key/value cache, every frame's keys and values recomputed per query;
* forward kinematics runs in the CPU simulator, one joint vector at a time (``mujoco.mj_kinematics``).

Samples are still batched through the networks (as on a GPU); the redundant work is what scales. Given the
same samples it returns the same costs as :meth:`Planner.evaluate` (up to float rounding): the tests check it,
and ``dexwm bench plan`` times both on the same model.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dexwm_model.actions.keypoint_action import fixed_camera_action
from dexwm_model.kinematics.hand_layout import ALLEGRO_TO_HAND21, HEATMAP_KEYPOINTS_21, NUM_HAND_KEYPOINTS
from dexwm_model.kinematics.panda_allegro import KEYPOINT_SITE_NAMES, NUM_ROBOT_JOINTS, PALM_CENTER
from dexwm_model.world_model import WorldModel
from dexwm_planner.planners.config import PlannerConfig
from dexwm_planner.planners.cost import hand_distance, latent_distance, step_weights, total_cost
from dexwm_planner.planners.workspace import PlanWorkspace
from dexwm_planner.planners.kinematics import DOWN, PALM_NORMAL_AXIS, RIGHT_HEATMAPS, CameraSetup
from dexwm_planner.planners.optimizer import OptimizerResult, SamplingOptimizer

ENCODE_BATCH = 64  # images per encoder call


class MujocoKinematics:
    """Per-sample FK in the simulator: hand sites and the palm frame of one joint vector per ``mj_kinematics``."""

    def __init__(self, model: Any | None = None) -> None:
        import mujoco

        from dexwm_hw.sim.scene import build_model

        self._mj = mujoco
        self.model = build_model() if model is None else model
        self.data = mujoco.MjData(self.model)
        m = self.model
        if m.nu != NUM_ROBOT_JOINTS:
            raise ValueError(f"the MuJoCo model has {m.nu} actuators, expected the {NUM_ROBOT_JOINTS} robot joints")
        self.qpos_adr = np.array([m.jnt_qposadr[m.actuator_trnid[i, 0]] for i in range(NUM_ROBOT_JOINTS)])
        self.site_ids = np.array([m.site(s).id for s in KEYPOINT_SITE_NAMES])
        self.palm_id = m.site(PALM_CENTER).id

    def one(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Joint vector ``(23,)`` -> the 17 hand sites ``(17, 3)`` and the palm rotation ``(3, 3)`` (world)."""
        self.data.qpos[self.qpos_adr] = q
        self._mj.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site_ids].copy(), self.data.site_xmat[self.palm_id].reshape(3, 3).copy()


class ReferencePattern:
    """Costs of sampled waypoint sequences computed with the reference compute pattern (see module doc)."""

    def __init__(self, model: WorldModel, config: PlannerConfig, camera: CameraSetup,
                 kinematics: MujocoKinematics | None = None, device: torch.device | str | None = None,
                 chunk_size: int | None = None) -> None:
        if config.cost.uses_objects:
            raise ValueError("the reference pattern reproduces the paper's cost (latent + hand + orientation); it has "
                             "no object term: set cost.object_weight 0 to compare against it")
        if config.cost.uses_focus or config.cost.uses_approach or config.cost.uses_depth:
            raise ValueError("the reference pattern reproduces the paper's cost (latent + hand + orientation); it has "
                             "no focused latent, approach or depth term: set cost.latent_focus, cost.approach_weight "
                             "and cost.depth_weight 0 to compare against it")
        self.model = model
        self.config = config
        self.camera = camera
        self.kinematics = MujocoKinematics() if kinematics is None else kinematics
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.dtype = next(model.predictor.parameters()).dtype
        self.chunk_size = chunk_size or config.runtime.chunk_size
        self.autocast_dtype: torch.dtype | None = None  # set to torch.bfloat16 to run the networks in autocast
        self.counters = {"encoded_images": 0, "predictor_queries": 0, "fk_calls": 0}
        self.workspace = None
        if config.cost.workspace_weight > 0:  # the same term as the planner's, evaluated one sample at a time
            from dexwm_model.kinematics.panda_allegro import PandaAllegroFK

            self.workspace = PlanWorkspace.from_safety_config(PandaAllegroFK.default().double(),
                                                              config.cost.workspace_margin)
        self.seconds = {"encode": 0.0, "predict": 0.0, "fk": 0.0}

    def _autocast(self):
        import contextlib

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def kinematics_of(self, joints: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample simulator FK of the current joints followed by each sample's waypoints: hand keypoints
        ``(N, T + 1, 21, 3)`` and palm rotations ``(N, T + 1, 3, 3)``."""
        t0 = time.perf_counter()
        n, t, _ = samples.shape
        kp = np.empty((n, t + 1, NUM_HAND_KEYPOINTS, 3))
        palm = np.empty((n, t + 1, 3, 3))
        h21 = list(ALLEGRO_TO_HAND21)
        for i in range(n):
            for s in range(t + 1):
                sites, rot = self.kinematics.one(joints if s == 0 else samples[i, s - 1])
                kp[i, s], palm[i, s] = sites[h21], rot
        self.counters["fk_calls"] += n * (t + 1)
        self.seconds["fk"] += time.perf_counter() - t0
        return kp, palm

    @torch.no_grad()
    def costs(self, images: Any, times: Any, joints: Any, goal: Tensor, samples: Tensor,
              goal_keypoints: Tensor | None = None) -> Tensor:
        """Costs ``(N,)`` of waypoint sequences ``samples (N, T, 23)`` for the context ``images (C, H, W, 3)`` taken
        at ``times (C,)``, current ``joints (23,)``, goal latent ``(P, d)`` and right-hand goal pixels ``(6, 2)``."""
        cfg = self.config
        pc, cc = cfg.planner, cfg.cost
        dev = self.device
        images = torch.as_tensor(np.asarray(images)) if not isinstance(images, Tensor) else images
        times = torch.as_tensor(np.asarray(times, dtype=np.float64) if not isinstance(times, Tensor) else times,
                                dtype=torch.float64)
        c = images.shape[0]
        if images.dim() != 4 or tuple(times.shape) != (c,):
            raise ValueError(f"images (C, H, W, 3) and times (C,) must match, found {tuple(images.shape)} and "
                             f"{tuple(times.shape)}")
        n, t, _ = samples.shape
        if t != pc.horizon:
            raise ValueError(f"samples: expected {pc.horizon} waypoints (planner.horizon), found {t}")
        q_now = np.asarray(joints.cpu() if isinstance(joints, Tensor) else joints, dtype=np.float64)
        kp21, palm = self.kinematics_of(q_now, samples.detach().cpu().double().numpy())
        kp42 = np.concatenate([np.zeros_like(kp21), kp21], axis=-2)
        pose = self.camera.pose
        actions = torch.as_tensor(fixed_camera_action(kp42[:, :-1], kp42[:, 1:], pose)).to(dev, self.dtype)
        palm_down = torch.as_tensor((palm[:, 1:, :, PALM_NORMAL_AXIS] * np.asarray(DOWN)).sum(-1))
        fk_uv = None
        if cc.uses_hand and cc.hand_source == "fk":
            pts = kp21[:, 1:][:, :, list(HEATMAP_KEYPOINTS_21)]
            R, tc = pose[:3, :3], pose[:3, 3]
            cam = (pts - tc) @ R
            K = self.camera.intrinsics
            z = cam[..., 2:3]
            with np.errstate(divide="ignore", invalid="ignore"):
                uv = cam[..., :2] / z * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
                uv[..., 0] += K[0, 1] * cam[..., 1] / z[..., 0]
            fk_uv = torch.as_tensor(np.where(z > 1e-6, uv, np.nan))

        cap = self.model.predictor.cfg.max_context
        dts = torch.full((t,), float(pc.step_dt), dtype=torch.float64)
        latent = torch.empty(n, t, dtype=torch.float64)
        head_uv = torch.empty(n, t, 6, 2, dtype=torch.float64) if cc.uses_hand and cc.hand_source == "head" else None
        goal = goal.to(dev, self.dtype)[None]
        for i in range(0, n, self.chunk_size):
            b = min(self.chunk_size, n - i)
            preds: list[Tensor] = []
            frame_times = list(times.tolist())
            for s in range(t):
                # the window: the newest `cap` frames of [context images..., predictions so far]
                n_frames = c + s
                first = max(0, n_frames - cap)
                img_idx = list(range(first, c))
                pred_idx = list(range(max(0, first - c), s))
                lat = self._encode_repeated(images[img_idx], b)  # (b, n_img, P, d): re-encoded every time
                window = lat if not pred_idx else torch.cat([lat, torch.stack([preds[j] for j in pred_idx], 1)], 1)
                wt = torch.tensor([frame_times[j] for j in range(first, n_frames)], dtype=torch.float64)
                t1 = time.perf_counter()
                with self._autocast():
                    pred = self.model.predictor(window, wt.to(dev)[None].expand(b, -1),
                                                actions[i:i + b, s], dts[s].item())
                    pred = pred.to(self.dtype)
                    latent[i:i + b, s] = latent_distance(pred, goal).double().cpu()
                    if head_uv is not None:
                        uvh, _ = self.model.hand_keypoints(pred)
                        head_uv[i:i + b, s] = uvh[:, RIGHT_HEATMAPS].double().cpu()
                self._sync()
                self.seconds["predict"] += time.perf_counter() - t1
                self.counters["predictor_queries"] += b
                preds.append(pred)
                frame_times.append(frame_times[-1] + dts[s].item())
        hand = None
        if cc.uses_hand:
            if goal_keypoints is None:
                raise ValueError("goal_keypoints: the cost has a hand term; give the goal's right-hand pixels (6, 2)")
            uv = head_uv if head_uv is not None else fk_uv
            hand = hand_distance(uv, torch.as_tensor(goal_keypoints, dtype=torch.float64).cpu(), self.camera.image_hw)
        w = step_weights(t, cc.step_weight_exponent)
        total = total_cost(cc, w, latent, hand, palm_down)
        if self.workspace is not None:
            q0 = torch.as_tensor(np.asarray(joints, dtype=np.float64))
            outside = torch.stack([self.workspace.violation(q0, torch.as_tensor(samples[i:i + 1]).double().cpu())[0]
                                   for i in range(samples.shape[0])])
            total = total + cc.workspace_weight * outside.to(total)
        return total

    def _encode_repeated(self, images: Tensor, samples: int) -> Tensor:
        """The window's images encoded once per sample (the reference re-encodes them for every query)."""
        t0 = time.perf_counter()
        k = images.shape[0]
        batch = images[None].expand(samples, *images.shape).reshape(samples * k, *images.shape[1:])
        out = []
        with self._autocast():
            for j in range(0, batch.shape[0], ENCODE_BATCH):
                out.append(self.model.encode(batch[j:j + ENCODE_BATCH].to(self.device)).to(self.dtype))
        self._sync()
        self.counters["encoded_images"] += samples * k
        self.seconds["encode"] += time.perf_counter() - t0
        lat = torch.cat(out)
        return lat.view(samples, k, *lat.shape[1:])

    def plan(self, images: Any, times: Any, joints: Any, goal: Tensor, optimizer: SamplingOptimizer,
             mean: Tensor, std: Tensor, generator: torch.Generator | None = None,
             goal_keypoints: Tensor | None = None) -> OptimizerResult:
        """A whole replan with the reference pattern (same optimiser, same cost)."""
        return optimizer.run(lambda x: self.costs(images, times, joints, goal, x, goal_keypoints).to(x.device),
                             mean, std, generator)
