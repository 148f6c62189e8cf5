"""The planner node's parameters: :class:`PlannerNodeConfig` (defaults from ``config/planner_node.yaml``) and
their declaration with descriptions and ranges (:class:`PlannerParameters`, a part of
:class:`dexwm_ros.planner_node.PlannerNode`)."""

from __future__ import annotations

from dataclasses import dataclass

from rcl_interfaces.msg import ParameterDescriptor

from dexwm_interfaces.action import RunTask
from dexwm_robot.config import ConfigError, from_dict, load_yaml
from dexwm_ros.controller_common import float_range, int_range
from dexwm_ros.topics import IMAGE_TOPIC

NODE_NAME = "dexwm_planner"
PARAMS_FILE = "planner_node.yaml"
TASKS = (RunTask.Goal.TASK_REACH, RunTask.Goal.TASK_GRASP, RunTask.Goal.TASK_PLACE)
METHODS = (RunTask.Goal.PLANNER_CEM, RunTask.Goal.PLANNER_MPPI)


@dataclass
class PlannerNodeConfig:
    """The node's parameters (defaults: ``config/planner_node.yaml``, section ``dexwm_planner.ros__parameters``)."""

    checkpoint: str
    device: str
    planner: str
    profile: str
    seed: int
    image_topic: str
    camera_name: str
    image_timeout: float
    joint_states_timeout: float
    ack_timeout: float
    execute_timeout: float
    position_tolerance: float
    wait_settled: bool
    hold_duration: float
    max_steps_limit: int
    max_duration: float
    max_duration_limit: float
    max_rejections: int
    max_unfollowed: int
    success_cost: float
    goal_max_age: float
    goal_timeout: float
    torch_threads: int
    task: str
    goal_image: str
    episode_file: str
    result_file: str
    startup_timeout: float
    recording_dir: str
    decoder: str


def load_node_config(path: str = PARAMS_FILE) -> PlannerNodeConfig:
    data = load_yaml(path)
    try:
        section = data[NODE_NAME]["ros__parameters"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: expected '{NODE_NAME}: {{ros__parameters: {{...}}}}'") from exc
    return from_dict(PlannerNodeConfig, section, f"{path}:{NODE_NAME}")


class PlannerParameters:
    """Declares and reads the node's parameters (mixed into the node)."""

    def _declare_parameters(self) -> None:
        d = load_node_config()
        D = ParameterDescriptor
        ro = dict(read_only=True)
        dec = self.declare_parameter

        def fl(name, value, text, lo, hi, read_only=False):
            dec(name, float(value), D(description=text, floating_point_range=float_range(lo, hi),
                                      read_only=read_only))

        dec("checkpoint", d.checkpoint, D(description="world-model checkpoint folder (config.yaml + "
                                                      "model.safetensors); required", **ro))
        dec("device", d.device, D(description="torch device of the planner", additional_constraints=
                                  "auto | cpu | cuda | cuda:N", **ro))
        dec("planner", d.planner, D(description="optimiser of goals that do not choose one",
                                    additional_constraints="cem | mppi", **ro))
        dec("profile", d.profile, D(description="planner.yaml changes from config/mpc.yaml planner_profiles "
                                                "(paper, cpu, quick); auto: paper on CUDA, cpu otherwise; empty: "
                                                "planner.yaml as is", **ro))
        dec("seed", d.seed, D(description="sampling seed of the planner (replan r of a task uses seed + r)",
                              integer_range=int_range(0, 2**31 - 1), **ro))
        dec("image_topic", d.image_topic or IMAGE_TOPIC, D(description="task camera image topic", **ro))
        dec("camera_name", d.camera_name, D(description="name of the task camera accepted by SetGoalFromCamera "
                                                        "(besides the empty name)", **ro))
        fl("image_timeout", d.image_timeout, "s without a camera frame before the robot is held and the task "
           "ends with CAMERA_STALE", 0.05, 60.0)
        fl("joint_states_timeout", d.joint_states_timeout, "s without /joint_states before the task ends with "
           "CONTROLLER_TIMEOUT", 0.05, 60.0)
        fl("ack_timeout", d.ack_timeout, "s for the safety layer to accept or reject a waypoint before the task "
           "ends with CONTROLLER_TIMEOUT", 0.05, 60.0)
        fl("execute_timeout", d.execute_timeout, "s past a waypoint's duration after which the next replan starts "
           "even if the joints have not arrived", 0.0, 60.0)
        fl("position_tolerance", d.position_tolerance, "rad: every joint this close to the waypoint = arrived",
           0.0001, 0.5)
        dec("wait_settled", d.wait_settled, D(
            description="false: a waypoint is executed once its duration is over and a joint state from after its "
                        "end arrived (what `dexwm bench tasks` does: the next frame is taken as the move ends); true: "
                        "also wait until the joints slow below 0.05 rad/s"))
        fl("hold_duration", d.hold_duration, "s: time_from_start of the hold waypoint sent when a task ends",
           0.01, 5.0)
        dec("max_steps", int(self._mpc_max_steps()), D(
            description="control steps (replans whose waypoints were executed) of goals with max_steps = 0 (default: "
                        "config/mpc.yaml mpc.max_steps)",
            integer_range=int_range(1, 100000)))
        dec("max_steps_limit", d.max_steps_limit, D(description="goals asking for more control steps are rejected",
                                                    integer_range=int_range(1, 100000)))
        fl("max_duration", d.max_duration, "s: duration of goals with max_duration = 0", 0.1, 86400.0)
        fl("max_duration_limit", d.max_duration_limit, "s: goals asking for longer are rejected", 0.1, 86400.0)
        dec("max_rejections", d.max_rejections, D(description="waypoints rejected by the safety layer in a row "
                                                              "before the task ends with ERROR",
                                                  integer_range=int_range(1, 1000)))
        dec("max_unfollowed", d.max_unfollowed, D(
            description="accepted waypoints in a row that the arm did not follow (commanded more than "
                        "position_tolerance, moved less than a fifth of it) before the robot is held and the task "
                        "ends with CONTROLLER_TIMEOUT: the arm controller is not executing",
            integer_range=int_range(1, 1000)))
        fl("success_cost", d.success_cost, "goals without ground truth succeed when the observation cost stays "
           "below this for success.hold_ticks replans (0: never)", 0.0, 1e9)
        fl("goal_max_age", d.goal_max_age, "s: SetGoalFromCamera default max_age", 0.001, 600.0)
        fl("goal_timeout", d.goal_timeout, "s: SetGoalFromCamera default timeout", 0.0, 600.0)
        dec("torch_threads", d.torch_threads, D(description="CPU threads of PyTorch (0: its default)",
                                                integer_range=int_range(0, 256), **ro))
        dec("task", d.task, D(description="run this task once at start-up and exit (0 on success); empty: serve "
                                          "RunTask goals", additional_constraints="'' | reach | grasp | place", **ro))
        dec("goal_image", d.goal_image, D(description="goal image file (PNG/JPEG) of the start-up task; empty with "
                                                      "episode_file: the episode's goal image", **ro))
        dec("episode_file", d.episode_file, D(description="episode.json of a suite episode (dexwm launch): the "
                                                          "start-up task gets its goal image and the success-test "
                                                          "inputs of its goal state; empty: none", **ro))
        dec("result_file", d.result_file, D(description="JSON file the start-up task's result is written to "
                                                        "(atomically); empty: none", **ro))
        fl("startup_timeout", d.startup_timeout, "s the start-up task waits for the camera, joints and safety layer",
           1.0, 3600.0, read_only=True)
        dec("decoder", d.decoder, D(description="latent decoder folder (`dexwm train decoder`) for the imagined frames "
                                                "of the rerun recordings; it must fit the checkpoint's encoder; empty: "
                                                "the checkpoint's bundled <checkpoint>/decoder if any, else none", **ro))
        dec("recording_dir", d.recording_dir, D(description="folder of one rerun recording (.rrd) per RunTask goal "
                                                            "(camera, goal, plan keypoints, joints, costs); empty: "
                                                            "off", **ro))
        if self._param("planner") not in METHODS:
            raise ConfigError(f"parameter planner: expected one of {list(METHODS)}, found {self._param('planner')!r}")
        if self._param("max_duration") > self._param("max_duration_limit"):
            raise ConfigError(f"parameter max_duration ({self._param('max_duration')}) exceeds max_duration_limit "
                              f"({self._param('max_duration_limit')})")

    @staticmethod
    def _mpc_max_steps() -> int:
        from dexwm_planner.mpc import load_mpc_config

        return load_mpc_config().max_steps

    def _param(self, name: str):
        return self.get_parameter(name).value
