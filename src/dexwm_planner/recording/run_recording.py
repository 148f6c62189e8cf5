"""One rerun recording (``.rrd`` file) per goal-image MPC run, for offline viewing (``rerun FILE.rrd``).

Written through rerun's file sink only: no viewer is spawned and nothing goes over the network. Every control
step is logged on three timelines: ``step`` (the replan index), ``wall_time`` (when it was logged) and, when the
caller gives one, ``time`` (the observation's capture time, seconds). Entities:

* ``camera/image``: the camera frame the plan was made from; on it ``camera/keypoints/actual`` (green: the
  right wrist + 5 fingertips by forward kinematics of the measured joints, projected through the planner's
  camera) and ``camera/keypoints/predicted`` (the plan's predicted hand keypoints, one colour per plan step,
  yellow = the step executed now);
* ``goal/image`` + ``goal/keypoints`` (cyan), logged once per run;
* ``imagined/plan``: the decoded predicted frames of the best plan side by side (plan step 1 .. T), only with a
  latent decoder that fits the world model's encoder; otherwise ``log`` says once why there are none;
* ``costs/observation`` (latent distance of the current frame to the goal), ``costs/best_plan``;
  ``errors/keypoint_px`` (mean pixel distance between the keypoints predicted for this frame at the previous
  replan and the actual ones), ``errors/prediction_latent`` (the MPC's latent prediction error);
  ``timing/planning_s`` and ``timing/recording_s`` (this class's own cost per step);
* ``joints/arm`` (7) and ``joints/hand`` (16) as named scalar series; ``task/<name>`` for the caller's scalars
  (e.g. the task's distance to success); ``log`` text notes.

Keypoints live in the model's input image (the encoder's crop) and are mapped back to camera pixels with
``GoalImageMPC.keypoints_to_image``. A default layout (blueprint) is stored in the file. Recording costs a few
milliseconds per step (raw images are logged uncompressed: no encoding on the control thread); decoding imagined
frames adds one decoder pass over the plan's T latents.
"""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from dexwm_robot.joint_names import ARM_JOINT_NAMES, HAND_JOINT_NAMES  # plain names, no rclpy
from dexwm_model.kinematics.panda_allegro import NUM_ROBOT_JOINTS
from dexwm_planner.mpc import check_image
from dexwm_planner.recording.imagined import fitting_decoder

APPLICATION_ID = "dexwm"
ACTUAL_COLOUR = (0, 220, 0)
GOAL_COLOUR = (0, 230, 255)
STEP_COLOURS = ((255, 230, 0), (255, 140, 0), (255, 40, 40), (200, 0, 200), (120, 0, 255))
RIGHT_HAND = slice(6, 12)  # the right wrist + 5 tips among the 12 heat-map keypoints
KEYPOINT_RADIUS_PX = 3.0
TIMELINE_STEP, TIMELINE_WALL, TIMELINE_TIME = "step", "wall_time", "time"


def default_blueprint():
    """The layout the viewer opens with: camera | goal | imagined on the left, costs, errors, timing and joints
    as plots on the right, the notes below."""
    import rerun.blueprint as rrb

    return rrb.Blueprint(
        rrb.Horizontal(
            rrb.Vertical(
                rrb.Spatial2DView(origin="camera", name="camera: predicted (plan) vs actual (FK) hand"),
                rrb.Horizontal(rrb.Spatial2DView(origin="goal", name="goal"),
                               rrb.Spatial2DView(origin="imagined", name="imagined (decoded plan)")),
                rrb.TextLogView(origin="log", name="notes"),
                row_shares=[3, 2, 1]),
            rrb.Vertical(
                rrb.TimeSeriesView(origin="costs", name="costs"),
                rrb.TimeSeriesView(origin="errors", name="prediction errors"),
                rrb.TimeSeriesView(origin="timing", name="timing (s)"),
                rrb.TimeSeriesView(origin="joints/arm", name="arm joints (rad)"),
                rrb.TimeSeriesView(origin="joints/hand", name="hand joints (rad)"),
                rrb.TimeSeriesView(origin="task", name="task")),
            column_shares=[3, 2]),
        collapse_panels=True)


def _finite_points(uv: np.ndarray) -> np.ndarray:
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    return uv[np.isfinite(uv).all(axis=1)]


class RunRecording:
    """Writes one ``.rrd`` file for one run (module doc).

    ``mpc``: the :class:`~dexwm_planner.mpc.GoalImageMPC` that plans the run (None for a policy without a world
    model: images, joints and costs only). ``decoder``: a ``LatentDecoder`` or its folder for imagined frames (None:
    none); one that does not fit the world model is noted once in ``log`` and skipped. ``name``: the recording's
    name in the viewer (default: the file's stem). Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path, mpc: Any | None = None, decoder: Any | None = None,
                 name: str | None = None) -> None:
        import rerun as rr

        path = Path(path).expanduser()
        if path.suffix != ".rrd":
            raise ValueError(f"recording path: expected a file name ending in .rrd, found {str(path)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._rr = rr
        self.path = path
        self.mpc = mpc
        self.step_seconds: list[float] = []  # what log_step cost, per call
        self._pending_uv: np.ndarray | None = None  # (6, 2) camera pixels predicted for the next observed frame
        self._closed = False
        self._stream = rr.RecordingStream(APPLICATION_ID, recording_id=str(uuid.uuid4()))
        self._stream.save(str(path), default_blueprint=default_blueprint())
        self._stream.send_recording_name(name or path.stem)
        self._stream.log("joints/arm", rr.SeriesLines(names=list(ARM_JOINT_NAMES)), static=True)
        self._stream.log("joints/hand", rr.SeriesLines(names=list(HAND_JOINT_NAMES)), static=True)
        self.decoder = None
        if decoder is not None:
            if mpc is None:
                raise ValueError("RunRecording: a decoder needs the mpc whose predicted latents it decodes")
            self.decoder, reason = fitting_decoder(decoder, mpc.model, mpc.device)
            if reason is not None:
                self.note(f"no imagined frames: the latent decoder does not fit this world model ({reason})",
                          level="WARN")
        elif mpc is not None:
            self.note("no imagined frames: no latent decoder given")

    # ------------------------------------------------------------------------------------------ logging
    def _set_time(self, step: int, t: float | None) -> None:
        s = self._stream
        s.set_time(TIMELINE_STEP, sequence=int(step))
        s.set_time(TIMELINE_WALL, timestamp=time.time())
        if t is not None and math.isfinite(float(t)):
            s.set_time(TIMELINE_TIME, duration=float(t))

    def note(self, text: str, level: str = "INFO") -> None:
        """A text note in ``log`` (at the current time of the step timeline)."""
        self._check_open()
        self._stream.log("log", self._rr.TextLog(str(text), level=level))

    def log_goal(self, goal_image: np.ndarray, goal_keypoints: np.ndarray | None = None) -> None:
        """The run's goal image (static: shown at every step) and its hand keypoints ``(12, 2)`` or ``(6, 2)`` in
        model-image pixels (default: the mpc's goal keypoints)."""
        self._check_open()
        check_image(goal_image, "log_goal: goal_image")
        rr = self._rr
        self._stream.log("goal/image", rr.Image(goal_image), static=True)
        kp = goal_keypoints
        if kp is None and self.mpc is not None:
            kp = self.mpc.goal_keypoints
        if kp is not None:
            kp = np.asarray(kp, dtype=np.float64)
            kp = kp[RIGHT_HAND] if kp.shape[0] == 12 else kp
            uv = _finite_points(self._to_camera(kp, goal_image.shape[:2]))
            self._stream.log("goal/keypoints", rr.Points2D(uv, colors=GOAL_COLOUR, radii=KEYPOINT_RADIUS_PX),
                             static=True)

    def log_step(self, step: int, image: np.ndarray, joints: np.ndarray, plan_step: Any | None = None,
                 t: float | None = None, scalars: dict[str, float] | None = None) -> float:
        """One control step: the camera ``image`` (H, W, 3) uint8 the plan was made from, the measured ``joints``
        (23,), the ``plan_step`` (an ``MPCStep``, None before the first plan / at the end), the observation time
        ``t`` (s) and extra named ``scalars`` (logged under ``task/``). Returns the seconds this call took."""
        t0 = time.perf_counter()
        self._check_open()
        check_image(image, "log_step: image")
        q = np.asarray(joints, dtype=np.float64)
        if q.shape != (NUM_ROBOT_JOINTS,):
            raise ValueError(f"log_step: joints must have shape ({NUM_ROBOT_JOINTS},), found {q.shape}")
        rr, s = self._rr, self._stream
        self._set_time(step, t)
        hw = image.shape[:2]
        s.log("camera/image", rr.Image(image))
        s.log("joints/arm", rr.Scalars(q[:len(ARM_JOINT_NAMES)]))
        s.log("joints/hand", rr.Scalars(q[len(ARM_JOINT_NAMES):]))
        if self.mpc is not None:
            actual = self._actual_keypoints(q, hw)
            s.log("camera/keypoints/actual", rr.Points2D(_finite_points(actual), colors=ACTUAL_COLOUR,
                                                         radii=KEYPOINT_RADIUS_PX))
            if self._pending_uv is not None:
                both = np.isfinite(actual).all(axis=1) & np.isfinite(self._pending_uv).all(axis=1)
                if both.any():
                    err = np.linalg.norm(actual[both] - self._pending_uv[both], axis=1).mean()
                    s.log("errors/keypoint_px", rr.Scalars(float(err)))
            self._pending_uv = None
            cost = float(self.mpc.observation_cost())
            if math.isfinite(cost):
                s.log("costs/observation", rr.Scalars(cost))
        if plan_step is not None:
            self._log_plan(plan_step, hw)
        for key, value in (scalars or {}).items():
            if value is not None and math.isfinite(float(value)):
                s.log(f"task/{key}", rr.Scalars(float(value)))
        dt = time.perf_counter() - t0
        s.log("timing/recording_s", rr.Scalars(dt))
        self.step_seconds.append(dt)
        return dt

    def _log_plan(self, plan_step: Any, hw: tuple[int, int]) -> None:
        rr, s = self._rr, self._stream
        if math.isfinite(float(plan_step.cost)):
            s.log("costs/best_plan", rr.Scalars(float(plan_step.cost)))
        s.log("timing/planning_s", rr.Scalars(float(plan_step.planning_time_s)))
        err = (plan_step.info or {}).get("prediction_error")
        if err is not None and math.isfinite(float(err)):
            s.log("errors/prediction_latent", rr.Scalars(float(err)))
        kp = plan_step.predicted_keypoints
        if kp is not None and self.mpc is not None:
            uv = self._to_camera(np.asarray(kp, dtype=np.float64)[:, RIGHT_HAND], hw)  # (T, 6, 2)
            colours = np.array([STEP_COLOURS[min(i, len(STEP_COLOURS) - 1)] for i in range(uv.shape[0])],
                               dtype=np.uint8)
            colours = np.repeat(colours, uv.shape[1], axis=0)
            flat = uv.reshape(-1, 2)
            keep = np.isfinite(flat).all(axis=1)
            s.log("camera/keypoints/predicted", rr.Points2D(flat[keep], colors=colours[keep],
                                                            radii=KEYPOINT_RADIUS_PX))
            k = int(len(plan_step.waypoints)) - 1  # the plan step reached when the executed waypoints end
            self._pending_uv = uv[min(k, uv.shape[0] - 1)]
        if self.decoder is not None:
            latents = getattr(self.mpc, "last_predicted_latents", None)
            if latents is not None:
                frames = self.decoder.decode(latents.float())  # (T, h, w, 3)
                s.log("imagined/plan", rr.Image(np.concatenate(list(frames), axis=1)))

    # ------------------------------------------------------------------------------------------ keypoints
    def _to_camera(self, uv: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        return self.mpc.keypoints_to_image(uv, hw) if self.mpc is not None else uv

    def _actual_keypoints(self, q: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        import torch

        kin = self.mpc.planner.kin
        with torch.no_grad():
            uv = kin.hand_pixels(torch.as_tensor(q, dtype=torch.float32, device=self.mpc.device))
        return self._to_camera(uv.double().cpu().numpy(), hw)

    # ------------------------------------------------------------------------------------------ lifetime
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"recording {self.path} is closed")

    def close(self) -> None:
        """Flush and finish the file (its footer / chunk manifest); further logging raises."""
        if self._closed:
            return
        self._closed = True
        self._stream.flush()
        self._stream.disconnect()

    def overhead(self) -> dict[str, Any]:
        """Per-step logging time so far: count, mean, p50, p95, max (seconds)."""
        v = np.asarray(self.step_seconds, dtype=np.float64)
        if not v.size:
            return {"steps": 0, "mean_s": None, "p50_s": None, "p95_s": None, "max_s": None}
        return {"steps": int(v.size), "mean_s": round(float(v.mean()), 6),
                "p50_s": round(float(np.percentile(v, 50)), 6), "p95_s": round(float(np.percentile(v, 95)), 6),
                "max_s": round(float(v.max()), 6)}

    def __enter__(self) -> "RunRecording":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
