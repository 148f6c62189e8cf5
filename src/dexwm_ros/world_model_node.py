"""``dexwm_world_model_node``: the world model live on the camera stream.

  sub ``camera/color/image_raw``   sensor_msgs/Image (rgb8 / bgr8 / rgba8 / bgra8 / mono8); the newest frame is
                                   processed at most ``max_rate_hz`` times per second (older ones are skipped)
  sub ``/joint_states``            sensor_msgs/JointState (the start of an imagined rollout along a plan)
  sub ``dexwm/plan_status``        dexwm_interfaces/PlanStatus (the planner's current plan)
  pub ``dexwm/hand_keypoints``     dexwm_interfaces/HandKeypoints: the hand head's right-hand wrist + 5 fingertips
                                   read out of the current frame's latent, in the camera image's pixels (the other
                                   15 layout points and all 3-D positions are unknown: NaN, confidence 0)
  pub ``dexwm/imagined_image``     sensor_msgs/Image rgb8, only with a latent decoder (parameter ``decoder``): the
                                   frame the model predicts at the end of the planner's latest plan (or, without a
                                   fresh plan, after ``imagine_steps`` steps of the robot holding still), decoded;
                                   stamped with the time it depicts

A missing or damaged checkpoint (or decoder) is fatal: the node logs why and exits 1 (bad parameters: 2).
Parameters: ``config/world_model_node.yaml`` (section ``dexwm_world_model.ros__parameters``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from dexwm_ros import conversions as conv
from dexwm_ros.controller_common import float_range, int_range, joint_positions
from dexwm_robot.joint_names import ALL_JOINT_NAMES
from dexwm_ros.exit_codes import EXIT_CANNOT_RUN
from dexwm_ros.node_runner import run_node
from dexwm_interfaces.msg import HandKeypoints, PlanStatus
from dexwm_robot.config import ConfigError, from_dict, load_yaml
from dexwm_model.decoder import decoder_folder
from dexwm_ros.hand_keypoints import crop_pixels_to_image, hand_keypoints_message, heatmap_pixels_to_hand21
from dexwm_ros.images import image_to_rgb
from dexwm_ros.topics import HAND_KEYPOINTS_TOPIC, IMAGE_TOPIC, IMAGINED_IMAGE_TOPIC, PLAN_STATUS_TOPIC

NODE_NAME = "dexwm_world_model"
PARAMS_FILE = "world_model_node.yaml"
DEVICES = "auto | cpu | cuda | cuda:N"
RIGHT = slice(6, 12)  # the right hand's wrist + 5 tips among the hand head's 12 heat-maps


class CheckpointLoadError(RuntimeError):
    """The world-model checkpoint or the decoder cannot be used (missing, damaged, mismatched)."""


@dataclass
class WorldModelNodeConfig:
    """The node's parameters (defaults: ``config/world_model_node.yaml``)."""

    checkpoint: str
    device: str
    decoder: str
    image_topic: str
    max_rate_hz: float
    context_frames: int
    frame_period_s: float
    imagine_steps: int
    plan_max_age_s: float
    torch_threads: int


def load_node_config(path: str = PARAMS_FILE) -> WorldModelNodeConfig:
    data = load_yaml(path)
    try:
        section = data[NODE_NAME]["ros__parameters"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: expected '{NODE_NAME}: {{ros__parameters: {{...}}}}'") from exc
    return from_dict(WorldModelNodeConfig, section, f"{path}:{NODE_NAME}")


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; ``ConfigError`` for anything else."""
    name = name.strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not (name in ("cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())):
        raise ConfigError(f"parameter device: expected {DEVICES}, found {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"parameter device: {name!r} requested but this machine has no CUDA device")
    return torch.device(name)


def load_world_model(checkpoint: str, device: torch.device):
    """The checkpoint's :class:`WorldModel` on ``device``; :class:`CheckpointLoadError` with the reason."""
    from dexwm_model.world_model import CheckpointError, WorldModel

    if not checkpoint.strip():
        raise CheckpointLoadError("parameter checkpoint is empty: give the world-model checkpoint folder "
                                  "(config.yaml + model.safetensors), e.g. `-p checkpoint:=runs/cpu/final` or "
                                  "`dexwm launch <task> --checkpoint DIR`")
    folder = Path(checkpoint).expanduser()
    if not folder.is_dir():
        raise CheckpointLoadError(f"world-model checkpoint {folder}: no such folder")
    try:
        return WorldModel.load(folder, map_location=device)
    except (CheckpointError, ConfigError, ValueError, RuntimeError, OSError) as exc:
        raise CheckpointLoadError(f"world-model checkpoint {folder} cannot be loaded: {exc}") from exc


class WorldModelNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        d = load_node_config()
        D = ParameterDescriptor
        ro = dict(read_only=True)
        self.declare_parameter("checkpoint", d.checkpoint, D(
            description="world-model checkpoint folder (config.yaml + model.safetensors); required", **ro))
        self.declare_parameter("device", d.device, D(description="torch device", additional_constraints=DEVICES,
                                                     **ro))
        self.declare_parameter("decoder", d.decoder, D(
            description="latent decoder folder (`dexwm train decoder`) for the imagined frames; empty: the one "
                        "bundled in the checkpoint (<checkpoint>/decoder) if any, else none (nothing is published on "
                        "dexwm/imagined_image)", **ro))
        self.declare_parameter("image_topic", d.image_topic or IMAGE_TOPIC, D(
            description="camera image topic", additional_constraints="a valid ROS topic name", **ro))
        self.declare_parameter("max_rate_hz", float(d.max_rate_hz), D(
            description="at most this many camera frames processed per second (the newest; others skipped)",
            floating_point_range=float_range(0.1, 100.0)))
        self.declare_parameter("context_frames", d.context_frames, D(
            description="frames kept as the context of the imagined rollouts (at most the predictor's max_context)",
            integer_range=int_range(1, 64), **ro))
        self.declare_parameter("frame_period_s", float(d.frame_period_s), D(
            description="s; context frames are at least this far apart (the newest frame is always kept)",
            floating_point_range=float_range(0.0, 10.0), **ro))
        self.declare_parameter("imagine_steps", d.imagine_steps, D(
            description="steps imagined (robot holding still) when no fresh plan is known",
            integer_range=int_range(1, 50), **ro))
        self.declare_parameter("plan_max_age_s", float(d.plan_max_age_s), D(
            description="s; a plan (dexwm/plan_status) older than this is not imagined any more",
            floating_point_range=float_range(0.0, 600.0), **ro))
        self.declare_parameter("torch_threads", d.torch_threads, D(
            description="CPU threads of PyTorch (0: its default)", integer_range=int_range(0, 256), **ro))
        p = lambda name: self.get_parameter(name).value  # noqa: E731
        if int(p("torch_threads")) > 0:
            torch.set_num_threads(int(p("torch_threads")))
        self.device = resolve_device(str(p("device")))
        t0 = time.perf_counter()
        self.model = load_world_model(str(p("checkpoint")), self.device)
        self.preprocess = self.model.encoder.preprocess
        max_ctx = self.model.config.predictor.max_context
        if int(p("context_frames")) > max_ctx:
            raise ConfigError(f"parameter context_frames: at most the predictor's max_context ({max_ctx}), found "
                              f"{p('context_frames')}")
        self.context_frames = int(p("context_frames"))
        self.frame_period = float(p("frame_period_s"))
        self.imagine_steps = int(p("imagine_steps"))
        self.plan_max_age = float(p("plan_max_age_s"))
        self.decoder = self._load_decoder(decoder_folder(str(p("decoder")), str(p("checkpoint"))))
        from dexwm_planner.planners.config import load_planner_config

        self.step_dt = load_planner_config().planner.step_dt  # the frame spacing the model predicts at

        self._latest: tuple[Image, float] | None = None   # newest frame and its arrival (monotonic)
        self._processed_stamp = None
        self._kept: list[tuple[float, torch.Tensor]] = []  # (capture time s, latent (P, d)), oldest first
        self._newest: tuple[float, torch.Tensor] | None = None  # the newest frame when it is not in _kept
        self._joints: np.ndarray | None = None
        self._plan: tuple[np.ndarray, float] | None = None  # (waypoints (T, 23), arrival monotonic)
        self.stats = {"frames": 0, "imagined": 0, "seconds": 0.0}
        self.pub_keypoints = self.create_publisher(HandKeypoints, HAND_KEYPOINTS_TOPIC, 10)
        self.pub_imagined = self.create_publisher(Image, IMAGINED_IMAGE_TOPIC, 5) if self.decoder else None
        self.create_subscription(Image, p("image_topic"), self._on_image, 2)
        self.create_subscription(JointState, "joint_states", self._on_joints, 10)
        self.create_subscription(PlanStatus, PLAN_STATUS_TOPIC, self._on_plan, 10)
        self._timer = self.create_timer(1.0 / float(p("max_rate_hz")), self._process)
        self.add_post_set_parameters_callback(self._on_parameters)
        grid, dim = self.model.grid, self.model.latent_dim
        self.get_logger().info(
            f"world model up on {self.device} ({time.perf_counter() - t0:.1f} s to load {p('checkpoint')}): "
            f"{self.model.image_size[0]}x{self.model.image_size[1]} input, {grid[0]}x{grid[1]} tokens of {dim}; "
            f"hand keypoints on {self.resolve_topic_name(HAND_KEYPOINTS_TOPIC)}; "
            + (f"imagined frames on {self.resolve_topic_name(IMAGINED_IMAGE_TOPIC)} (decoder {p('decoder')})"
               if self.decoder else "no decoder configured (parameter decoder is empty): no imagined frames are "
                                    f"published on {self.resolve_topic_name(IMAGINED_IMAGE_TOPIC)}"))

    # ------------------------------------------------------------------------------------------------ set-up
    def _load_decoder(self, folder: str):
        if not folder.strip():
            return None
        from dexwm_model.decoder import LatentDecoder

        path = Path(folder).expanduser()
        if not path.is_dir():
            raise CheckpointLoadError(f"decoder {path}: no such folder")
        try:
            decoder = LatentDecoder.load(path, map_location=self.device)
            decoder.check_encoder(self.model.encoder)
        except (ValueError, RuntimeError, OSError) as exc:
            raise CheckpointLoadError(f"decoder {path} cannot be used: {exc}") from exc
        if not self.model.projection.is_identity or decoder.arch.in_dim != self.model.latent_dim:
            raise CheckpointLoadError(
                f"decoder {path} decodes encoder tokens of width {decoder.arch.in_dim}, but this world model predicts "
                f"latents of width {self.model.latent_dim} through a learned projection: its predictions cannot be "
                "decoded")
        return decoder

    def _on_parameters(self, params) -> None:
        if any(p.name == "max_rate_hz" for p in params):
            self.destroy_timer(self._timer)
            self._timer = self.create_timer(1.0 / float(self.get_parameter("max_rate_hz").value), self._process)

    # ------------------------------------------------------------------------------------------------ inputs
    def _on_image(self, msg: Image) -> None:
        self._latest = (msg, time.monotonic())

    def _on_joints(self, msg: JointState) -> None:
        q = joint_positions(msg.name, msg.position, ALL_JOINT_NAMES)
        if q is not None and np.all(np.isfinite(q)):
            self._joints = q

    def _on_plan(self, msg: PlanStatus) -> None:
        if msg.num_waypoints == 0:
            return
        n, j = int(msg.num_waypoints), int(msg.num_joints)
        names = list(msg.joint_names)
        if len(msg.waypoints) != n * j or len(names) != j or any(name not in names for name in ALL_JOINT_NAMES):
            self.get_logger().warning(
                f"ignored a PlanStatus: {len(msg.waypoints)} waypoint values for {n} x {j} and joint names {names}; "
                f"expected the 23 joints {list(ALL_JOINT_NAMES)}", throttle_duration_sec=5.0)
            return
        table = np.asarray(msg.waypoints, dtype=np.float64).reshape(n, j)
        order = [names.index(name) for name in ALL_JOINT_NAMES]
        self._plan = (table[:, order], time.monotonic())

    # ------------------------------------------------------------------------------------------------ work
    def _process(self) -> None:
        latest = self._latest
        if latest is None:
            return
        msg, _ = latest
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec, id(msg))
        if key == self._processed_stamp:
            return
        self._processed_stamp = key
        try:
            rgb = image_to_rgb(msg, "camera image")
        except ValueError as exc:
            self.get_logger().error(f"skipped a frame: {exc}", throttle_duration_sec=5.0)
            return
        t0 = time.perf_counter()
        stamp_s = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        with torch.no_grad():
            latent = self.model.encode(torch.from_numpy(rgb)[None].to(self.device))  # (1, P, d)
            uv, conf = self.model.hand_keypoints(latent)
        self._remember(stamp_s, latent[0])
        uv6 = crop_pixels_to_image(uv[0, RIGHT].double().cpu().numpy(), self.preprocess, rgb.shape[:2])
        uv21, conf21 = heatmap_pixels_to_hand21(uv6, conf[0, RIGHT].double().cpu().numpy())
        self.pub_keypoints.publish(hand_keypoints_message(None, uv21, rgb.shape[:2], conf21, msg.header.stamp,
                                                          msg.header.frame_id))
        self.stats["frames"] += 1
        if self.decoder is not None:
            self._imagine(msg, stamp_s)
        self.stats["seconds"] += time.perf_counter() - t0

    def _remember(self, t: float, latent: torch.Tensor) -> None:
        """Keep frames at least ``frame_period_s`` apart, plus always the newest one."""
        if self._kept and t <= self._kept[-1][0]:
            self._kept.clear()  # a restarted clock: the old frames are no context of this one
        if not self._kept or t - self._kept[-1][0] >= self.frame_period:
            self._kept.append((t, latent))
            del self._kept[:-self.context_frames]
            self._newest = None
        else:
            self._newest = (t, latent)

    @property
    def context_window(self) -> list[tuple[float, torch.Tensor]]:
        frames = self._kept + ([self._newest] if self._newest is not None else [])
        return frames[-self.context_frames:]

    def _imagine(self, msg: Image, stamp_s: float) -> None:
        from dexwm_model.actions.allegro import allegro_sequence_actions
        from dexwm_model.actions.space import ACTION_DIM
        from dexwm_planner.planners.kinematics import sim_camera

        plan = self._plan
        fresh = plan is not None and self._joints is not None and time.monotonic() - plan[1] <= self.plan_max_age
        with torch.no_grad():
            if fresh:
                seq = torch.as_tensor(np.concatenate([self._joints[None], plan[0]]), dtype=torch.float32)
                actions = allegro_sequence_actions(seq, torch.as_tensor(sim_camera().pose, dtype=torch.float32))
                actions = actions.to(self.device)[None]
            else:
                actions = torch.zeros(1, self.imagine_steps, ACTION_DIM, device=self.device)
            context = self.context_window
            times = torch.tensor([[t - stamp_s for t, _ in context]], dtype=torch.float32, device=self.device)
            ctx = torch.stack([z for _, z in context])[None]
            pred = self.model.predictor.rollout(ctx.to(actions.dtype), times, actions.to(ctx.dtype), self.step_dt)
            image = self.decoder.decode(pred[:, -1])[0]
        # the time it depicts, in integer nanoseconds (a float of epoch seconds resolves only ~0.24 us)
        depicted_ns = (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                       + round(actions.shape[1] * self.step_dt * 1e9))
        out = conv.numpy_to_image(image, "rgb8", None, msg.header.frame_id)
        out.header.stamp.sec, out.header.stamp.nanosec = divmod(depicted_ns, 10**9)
        self.pub_imagined.publish(out)
        self.stats["imagined"] += 1

    def close(self) -> None:
        n = self.stats["frames"]
        if n:
            self.get_logger().info(f"processed {n} frames ({self.stats['imagined']} imagined), "
                                   f"{1000 * self.stats['seconds'] / n:.1f} ms per frame")


def main(args: list[str] | None = None) -> int:
    return run_node(WorldModelNode, "dexwm_world_model_node", args, fatal={CheckpointLoadError: EXIT_CANNOT_RUN})


if __name__ == "__main__":
    raise SystemExit(main())
