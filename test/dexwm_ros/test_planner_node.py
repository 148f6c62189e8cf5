"""dexwm_planner_node over DDS, in the simulated graph (simulator, safety layer, arm and hand controllers), each node
started through its console script with its params file; a tiny random-init world-model checkpoint and the quick
planner profile. The test is the RunTask client: goals run to their limit with feedback and move the robot,
invalid goals are rejected with the reason, cancel / pre-emption / e-stop / a silent camera end the task with
their reason and the robot holds; a missing checkpoint stops the node with the message."""

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("dexwm_interfaces.action")

from geometry_msgs.msg import Point  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from dexwm_ros.controller_common import (  # noqa: E402
    COMMAND_TOPIC,
    ESTOP_SERVICE,
    STATUS_QOS,
    STATUS_TOPIC,
    WAYPOINT_TOPIC,
)
from dexwm_ros.conversions import numpy_to_image  # noqa: E402
from dexwm_ros.graph_probe import GraphProbe, GraphWaitError  # noqa: E402
from dexwm_robot.joint_names import ALL_JOINT_NAMES, CAMERA_OPTICAL_FRAME  # noqa: E402
from dexwm_ros.node_process import NodeProcess  # noqa: E402
from dexwm_robot.scene import load_sim_config  # noqa: E402
from dexwm_interfaces.action import RunTask  # noqa: E402
from dexwm_interfaces.msg import HandKeypoints, PlanStatus  # noqa: E402
from dexwm_interfaces.srv import EStop, SetGoalFromCamera  # noqa: E402
from dexwm_planner.benchmark.tiny_model import tiny_checkpoint  # noqa: E402

DOMAIN_ID = 161  # its own DDS domain: other test modules' nodes are invisible
ROOT = Path(__file__).resolve().parents[2]
HOME = np.asarray(load_sim_config()[0].home, dtype=np.float64)
WAIT = 60.0  # s wall: generous bound for a loaded 2-core machine (never a timing assertion)
R = RunTask.Result


def _launch(script: str, params: str, log_dir: Path, *overrides: str, log_name: str | None = None) -> NodeProcess:
    return NodeProcess(script, log_dir / f"{log_name or script}.log", domain_id=DOMAIN_ID, params=params,
                       overrides=overrides, ros_log_dir=ROOT / "log" / "ros")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("planner_node") / "model")


def goal_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (120, 160, 3), dtype=np.uint8)


class Graph(GraphProbe):
    """The simulated robot graph plus the planner node, and this probe node (its own context, spun in threads):
    the RunTask client, and subscriber of joints, plan status, markers and the safety status."""

    def __init__(self, log_dir: Path, checkpoint: Path) -> None:
        self.sim = _launch("dexwm_sim_node", "sim_node.yaml", log_dir)
        self.nodes = [
            _launch("dexwm_safety_node", "controllers.yaml", log_dir, "image_timeout:=4.0",
                    "joint_states_timeout:=1.0"),
            _launch("dexwm_arm_controller_node", "controllers.yaml", log_dir),
            _launch("dexwm_hand_controller_node", "controllers.yaml", log_dir),
            _launch("dexwm_planner_node", "planner_node.yaml", log_dir, f"checkpoint:={checkpoint}", "profile:=quick",
                    "device:=cpu", "torch_threads:=1", "image_timeout:=2.0"),
        ]
        self.planner = self.nodes[-1]
        super().__init__("planner_node_probe", DOMAIN_ID, threads=3, wait_s=WAIT,
                         describe=lambda: f"safety: {self.safety}\nplanner log:\n{self.planner.log()[-3000:]}")
        self.track_joints()
        self.collect(PlanStatus, "/dexwm/plan_status", 50)
        self.collect(MarkerArray, "/dexwm/plan_markers", 10)
        self.collect(String, f"/{STATUS_TOPIC}", STATUS_QOS)
        self.client = ActionClient(self.node, RunTask, "/dexwm/run_task")

    @property
    def plan_status(self) -> list[PlanStatus]:
        return self.got("/dexwm/plan_status")

    @property
    def markers(self) -> list[MarkerArray]:
        return self.got("/dexwm/plan_markers")

    @property
    def safety(self) -> dict | None:
        msg = self.last(f"/{STATUS_TOPIC}")
        return None if msg is None else json.loads(msg.data)

    def reset_home(self) -> np.ndarray:
        # the previous test's last hold travels planner -> safety -> controller -> simulator, two hops more than
        # this reset: let it finish first, and reset again should it still land after the reset
        self.wait_for(lambda: self.safety is not None and not self.safety["moving"], "the previous motion done")
        self.wait_settled("the robot at rest before the reset")
        for attempt in range(3):
            assert self.call(Trigger, "/dexwm/sim/reset", Trigger.Request()).success
            try:
                self.wait_for(lambda: (q := self.joints()) is not None and np.abs(q - HOME).max() < 0.01,
                              "the home pose", timeout=WAIT / 3 if attempt < 2 else None)
                break
            except GraphWaitError:
                if attempt == 2:
                    raise
        self.wait_for(lambda: self.safety is not None and self.safety["state"] == "READY", "the safety layer READY")
        return self.wait_settled("the robot at rest at home")

    def send(self, goal: RunTask.Goal) -> "GoalRun":
        return GoalRun(self, goal)

    def set_camera_rate(self, hz: float) -> None:
        value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=float(hz))
        response = self.call(SetParameters, "/dexwm_sim/set_parameters",
                             SetParameters.Request(parameters=[ParameterMsg(name="camera_rate_hz", value=value)]))
        assert response.results[0].successful, response.results[0].reason

    def watched(self) -> list:
        return [self.sim, *self.nodes]

    def close(self) -> dict[str, str]:
        super().close()
        return {p.args[0]: p.stop() for p in [*self.nodes, self.sim]}


class GoalRun:
    """One RunTask goal: its feedback and result."""

    def __init__(self, graph: Graph, goal: RunTask.Goal) -> None:
        self.graph = graph
        self.feedback: list = []
        graph.wait_for(lambda: graph.client.server_is_ready(), "the RunTask action server")
        future = graph.client.send_goal_async(goal, feedback_callback=lambda m: self.feedback.append(m.feedback))
        self.handle = graph.wait_for(lambda: future.done() and future.result(), "the goal response")
        assert self.handle.accepted  # invalid goals too: they end at once with REJECTED and the reason
        self._result = self.handle.get_result_async()

    def result(self) -> RunTask.Result:
        return self.graph.wait_for(lambda: self._result.done() and self._result.result().result, "the result")

    def wait_step(self, step: int) -> None:
        self.graph.wait_for(lambda: any(f.step >= step for f in list(self.feedback)), f"feedback of step {step}")

    def cancel(self) -> None:
        future = self.handle.cancel_goal_async()
        self.graph.wait_for(future.done, "the cancel response")


def test_missing_or_damaged_checkpoint_stops_the_node_with_the_reason(tmp_path, checkpoint):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.yaml").write_text((checkpoint / "config.yaml").read_text())
    (damaged / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes()[:1000])
    procs = {name: _launch("dexwm_planner_node", "planner_node.yaml", tmp_path, f"checkpoint:={folder}",
                           log_name=name)
             for name, folder in (("missing", tmp_path / "no_such_model"), ("damaged", damaged))}
    outs = {}
    for name, proc in procs.items():
        try:
            rc = proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.stop()
            pytest.fail(f"{name}: the planner node kept running")
        outs[name] = (rc, proc.log())
    rc, out = outs["missing"]
    assert rc == 1 and "dexwm_planner_node: " in out and "no_such_model: no such folder" in out, out
    rc, out = outs["damaged"]
    assert rc == 1 and "cannot be loaded" in out and "unreadable weights file" in out, out


@pytest.fixture(scope="module")
def graph(tmp_path_factory, checkpoint):
    g = Graph(tmp_path_factory.mktemp("planner_graph"), checkpoint)
    try:
        g.wait_for(lambda: g.safety is not None and g.safety["state"] == "READY", "the safety layer READY")
        g.wait_for(lambda: g.client.server_is_ready(), "the planner's RunTask server")
        # every hop planner -> safety -> arm/hand controllers -> simulator discovered: DDS drops what is sent before
        for topic, subscribers in [(WAYPOINT_TOPIC, 1), (COMMAND_TOPIC, 2), ("panda_arm_controller/joint_trajectory", 1),
                                   ("allegro_hand_position_controller/commands", 1)]:
            g.wait_for(lambda: g.node.count_publishers(topic) >= 1 and g.node.count_subscribers(topic) >= subscribers,
                       f"the {topic} connections")
        yield g
    finally:
        logs = g.close()
    for exe, out in logs.items():
        # nor a task failed at shutdown (rclpy prints those as "exception was never retrieved", no traceback)
        assert "Traceback" not in out and "never retrieved" not in out, f"{exe}:\n{out}"


def reach(max_steps: int, image: np.ndarray | None = None, **fields) -> RunTask.Goal:
    goal = RunTask.Goal(task=RunTask.Goal.TASK_REACH, max_steps=max_steps, **fields)
    if image is not None:
        goal.goal_image = numpy_to_image(image, "rgb8")
    return goal


def test_invalid_goals_are_rejected_with_the_reason(graph):
    short = numpy_to_image(goal_image(), "rgb8")
    short.data = short.data[:100]
    cases = [
        (RunTask.Goal(task="jump", goal_image=numpy_to_image(goal_image(), "rgb8")),
         "task: expected one of ['reach', 'grasp', 'place'], found 'jump'"),
        (reach(0), "goal_image is empty and no goal image was captured with /dexwm/set_goal_from_camera"),
        (reach(0, goal_image(), max_duration=-1.0), "max_duration: expected a finite number of seconds >= 0"),
        (reach(5000, goal_image()), "max_steps: at most 1000 (parameter max_steps_limit), found 5000"),
        (RunTask.Goal(task="reach", goal_image=short), "goal_image: Image.data: 100 bytes, expected step * height"),
        (reach(1, goal_image(), planner="random"), "planner: expected '' (server default) or one of ['cem', 'mppi']"),
        (RunTask.Goal(task="grasp", goal_image=numpy_to_image(goal_image(), "rgb8")),
         "target_object: required for grasp"),
        (RunTask.Goal(task="place", goal_image=numpy_to_image(goal_image(), "rgb8"), target_object="unicorn"),
         "target_object: unknown object 'unicorn'; the scene has"),
    ]
    accepted = graph.safety["counts"]["accepted"]
    for goal, reason in cases:
        result = graph.send(goal).result()
        assert (result.success, result.reason, result.steps) == (False, R.REASON_REJECTED, 0)
        assert reason in result.message
    assert graph.safety["counts"]["accepted"] == accepted  # nothing reached the robot
    log = graph.planner.log()
    assert "RunTask goal rejected: task: expected one of" in log


def far_goal_keypoints(fk) -> HandKeypoints:
    """The hand's 21 keypoints at home moved 1 m along panda_link0's x axis, in panda_link0."""
    with torch.no_grad():
        world = fk.hand21(torch.as_tensor(HOME)).numpy()
        pos, rot = fk.frames(torch.as_tensor(HOME), ["body:panda/link0"])
    base = (world - pos[0].numpy()) @ rot[0].numpy() + [1.0, 0.0, 0.0]
    msg = HandKeypoints(side=HandKeypoints.SIDE_RIGHT)
    msg.header.frame_id = "panda_link0"
    msg.positions = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in base]
    msg.confidence = [1.0] * 21
    return msg


def test_reach_goal_runs_its_steps_with_feedback_and_moves_the_robot(graph, fk):
    q0 = graph.reset_home()
    n_status, n_markers = len(graph.plan_status), len(graph.markers)
    t0 = time.monotonic()
    run = graph.send(reach(3, goal_image(1), goal_keypoints=far_goal_keypoints(fk)))
    result = run.result()
    assert (result.success, result.reason, result.steps) == (False, R.REASON_TIMEOUT, 3), result.message
    assert result.message == "max_steps (3) reached" and result.duration > 0
    metrics = dict(zip(result.metric_names, result.metrics))
    # the reach test ran on the measured joints against the goal 1 m away (the hand moves less than 0.5 m)
    assert 0.5 < metrics["keypoint_distance_m"] < 1.5
    assert metrics["replans"] >= 3 and metrics["mean_replan_time_s"] > 0 and metrics["loop_rate_hz"] > 0
    assert 0 < metrics["mean_replan_cpu_s"] <= metrics["mean_replan_time_s"] + 0.05  # the planning thread's own CPU
    assert np.isfinite(result.final_cost)
    # feedback after every replan and every executed step
    # (feedback travels on its own topic: the last one may arrive just after the result)
    graph.wait_for(lambda: len(run.feedback) >= 6 and run.feedback[-1].step == 3, "the feedback of every step")
    steps = [f.step for f in run.feedback]
    assert len(run.feedback) >= 6 and steps == sorted(steps) and steps[-1] == 3
    for f in run.feedback:
        assert f.phase in (RunTask.Feedback.PHASE_EXECUTING, RunTask.Feedback.PHASE_PLANNING)
        assert f.planning_time > 0 and np.isfinite(f.cost) and np.isfinite(f.best_plan_cost)
        kp = f.predicted
        assert kp.header.frame_id == CAMERA_OPTICAL_FRAME and len(kp.positions) == 21 and len(kp.pixels) == 42
        assert all(p.z > 0 for p in kp.positions)  # the hand is in front of the camera
    # the robot moved
    moved = max(np.abs(q - q0).max() for q in graph.joints_since(t0))
    assert moved > 0.02, f"the robot did not move ({moved:.4f} rad)"
    # plan status with the planned waypoints, and markers of the plan
    statuses, markers = graph.plan_status[n_status:], graph.markers[n_markers:]
    planned = [s for s in statuses if s.num_waypoints > 0]
    assert planned and statuses[-1].state == PlanStatus.STATE_DONE
    s = planned[-1]
    assert s.num_joints == 23 and len(s.waypoints) == s.num_waypoints * 23 and s.planner == "cem"
    assert s.iterations == 2 and s.samples == 8 and list(s.joint_names) == list(ALL_JOINT_NAMES)
    assert markers and markers[-1].markers[0].action == markers[-1].markers[0].DELETEALL
    spheres = [m for m in markers[-1].markers if m.ns == "plan_keypoints"]
    assert len(spheres) == s.num_waypoints and all(len(m.points) == 5 for m in spheres)
    assert all(m.header.frame_id == "panda_link0" for m in markers[-1].markers)


def assert_still(graph: Graph, q0: np.ndarray, what: str, samples: int = 20) -> None:
    t0 = time.monotonic()
    graph.wait_for(lambda: len(graph.joints_since(t0)) > samples, f"{samples} more joint states")
    drift = max(np.abs(q - q0).max() for q in graph.joints_since(t0))
    assert drift < 2e-3, f"{what}: the robot kept moving ({drift:.4f} rad)"


def test_goal_from_camera_then_cancel_holds_the_robot(graph):
    graph.reset_home()
    response = graph.call(SetGoalFromCamera, "/dexwm/set_goal_from_camera", SetGoalFromCamera.Request())
    assert response.success and response.image.width == 224 and response.image.encoding == "rgb8"
    assert response.stamp == response.image.header.stamp
    wrong = graph.call(SetGoalFromCamera, "/dexwm/set_goal_from_camera", SetGoalFromCamera.Request(camera="wrist"))
    assert not wrong.success and "unknown camera 'wrist'" in wrong.message
    run = graph.send(reach(50))  # empty goal_image: the captured one
    run.wait_step(1)
    run.cancel()
    result = run.result()
    assert (result.success, result.reason) == (False, R.REASON_CANCELED) and 1 <= result.steps < 50
    q = graph.wait_settled("the robot held after the cancel")
    assert_still(graph, q, "after cancel")
    assert "hold published (task ended: CANCELED)" in graph.planner.log()


def test_new_goal_preempts_and_estop_ends_the_task(graph):
    graph.reset_home()
    first = graph.send(reach(50, goal_image(2)))
    first.wait_step(1)
    second = graph.send(reach(50, goal_image(3), planner="mppi"))
    result = first.result()
    assert (result.reason, result.message) == (R.REASON_PREEMPTED, "pre-empted by a newer goal")
    second.wait_step(1)
    response = graph.call(EStop, f"/{ESTOP_SERVICE}", EStop.Request(engage=True, reason="test: operator"))
    try:
        assert response.engaged
        result = second.result()
        assert result.reason == R.REASON_ESTOP and "test: operator" in result.message
        refused = graph.send(reach(1, goal_image(4))).result()
        assert refused.reason == R.REASON_REJECTED and "e-stop engaged (test: operator)" in refused.message
    finally:
        graph.call(EStop, f"/{ESTOP_SERVICE}", EStop.Request(engage=False, reason="test done"))
    graph.wait_for(lambda: graph.safety["state"] == "READY", "READY after the release")


def test_silent_camera_holds_the_robot_and_ends_with_camera_stale(graph):
    graph.reset_home()
    run = graph.send(reach(50, goal_image(5)))
    run.wait_step(1)
    graph.set_camera_rate(0.1)  # the simulator's slowest camera: silent for 10 s of simulated time
    try:
        result = run.result()
        assert result.reason == R.REASON_CAMERA_STALE and result.steps >= 1
        assert "no camera frame" in result.message and "image_timeout 2 s" in result.message
        q = graph.wait_settled("the robot held")
        assert_still(graph, q, "camera silent")
    finally:
        graph.set_camera_rate(5.0)
    graph.wait_for(lambda: graph.safety["state"] == "READY", "READY with the camera back")



def test_silent_arm_controller_holds_the_robot_and_ends_with_controller_timeout(graph):
    """The arm controller up but not executing (frozen with SIGSTOP; a Panda in a reflex error does the same): the
    simulator keeps publishing /joint_states, the arm stands still, the planner notices and holds the robot."""
    graph.reset_home()
    arm_controller = graph.nodes[1]
    assert arm_controller.args[0].endswith("dexwm_arm_controller_node")
    run = graph.send(reach(50, goal_image(6)))
    run.wait_step(1)
    arm_controller.send_signal(signal.SIGSTOP)
    try:
        result = run.result()
    finally:
        arm_controller.send_signal(signal.SIGCONT)
    assert result.reason == R.REASON_CONTROLLER_TIMEOUT, result.message
    assert "the arm did not follow 3 waypoints in a row" in result.message and result.steps >= 4, result.message
    assert "hold published (task ended: CONTROLLER_TIMEOUT)" in graph.planner.log()
    # back to work, the controller executes the queued commands, the hold last: the robot comes to rest there
    q = graph.wait_settled("the robot held")
    assert_still(graph, q, "arm controller back")
    graph.wait_for(lambda: graph.safety["state"] == "READY", "READY with the controller back")


def test_start_up_task_runs_once_and_exits_with_its_outcome(graph, checkpoint, tmp_path):
    """Last graph test: the serving planner is replaced by one that runs a task at start-up (the launch graph's
    node that ends the run) and exits: 1 because the task did not succeed (its step limit was reached). Its goal is
    a suite episode's file (as `dexwm launch` writes it): goal image from it, scored with its goal keypoints, the
    result written to the result file."""
    from dexwm_planner.tasks.episode_file import write_episode_files

    episode_file, _ = write_episode_files("reach", 0, tmp_path / "episode")
    out = graph.planner.stop()
    assert "Traceback" not in out and "never retrieved" not in out, out
    graph.nodes.remove(graph.planner)
    graph.reset_home()
    result_file = tmp_path / "episode" / "result.json"
    proc = _launch("dexwm_planner_node", "planner_node.yaml", tmp_path, f"checkpoint:={checkpoint}", "profile:=quick",
                   "device:=cpu", "torch_threads:=1", "task:=reach", f"episode_file:={episode_file}",
                   f"result_file:={result_file}", "max_steps:=2", log_name="startup_task")
    try:
        rc = proc.wait(WAIT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the start-up task did not end:\n{proc.log()}")
    out = proc.log()
    assert rc == 3 and "start-up task reach: TIMEOUT after 2 steps" in out, out  # EXIT_TASK_FAILED
    assert "Traceback" not in out and "never retrieved" not in out, out
    result = json.loads(result_file.read_text())
    assert result["reason"] == "TIMEOUT" and result["steps"] == 2 and not result["success"]
    assert 0.0 < result["metrics"]["keypoint_distance_m"] < 2.0  # scored against the episode's goal keypoints

# ------------------------------------------------------------------- success tests from the graph's measurements
@pytest.fixture(scope="module")
def fk():
    from dexwm_model.kinematics.panda_allegro import PandaAllegroFK

    return PandaAllegroFK.default().double()


def test_task_monitor_holds_the_papers_tests_for_consecutive_ticks(fk):
    from dexwm_ros.monitor import REACH_SITE_NAMES, CostMonitor, GroundTruth, TaskMonitor
    from dexwm_planner.tasks.config import SuccessConfig

    cfg = SuccessConfig(hold_ticks=3, reach_distance=0.15, grasp_wrist_distance=0.2, lift_height=0.05,
                        place_distance=0.1)
    home_pts = fk.positions(torch.as_tensor(HOME), REACH_SITE_NAMES).numpy()
    away = HOME.copy()
    away[[0, 1]] += [0.8, 0.5]  # the hand swung far from its home spot
    reach_m = TaskMonitor(GroundTruth("reach", goal_points=home_pts), cfg, fk)
    assert [reach_m.update(HOME), reach_m.update(HOME), reach_m.update(away)] == [1, 2, 0]
    assert not reach_m.success and reach_m.metrics()["keypoint_distance_m"] > 0.15
    for _ in range(3):
        reach_m.update(HOME)
    assert reach_m.success and reach_m.metrics()["keypoint_distance_m"] < 1e-9

    target = np.array([0.5, 0.1, 0.05])
    place_m = TaskMonitor(GroundTruth("place", object_name="red_cube", target_position=target), cfg, fk)
    assert place_m.update(HOME, None) == 0  # no object pose yet: not decidable, nothing counted
    assert place_m.update(HOME, target + [0.05, 0, 0]) == 1 and place_m.update(HOME, target + [0.2, 0, 0]) == 0
    assert place_m.metrics()["object_distance_m"] == pytest.approx(0.2)

    grasp_m = TaskMonitor(GroundTruth("grasp", object_name="red_cube"), cfg, fk)
    wrist = home_pts[0]
    assert grasp_m.update(HOME, wrist + [0, 0, -0.1]) == 0  # next to the wrist but not lifted (rest height)
    assert grasp_m.update(HOME, wrist + [0, 0, -0.04]) == 1  # risen 6 cm while next to the wrist
    assert grasp_m.update(away, wrist + [0, 0, -0.04]) == 0  # the wrist went away
    assert grasp_m.metrics()["wrist_object_distance_m"] > 0.2

    never, by_cost = CostMonitor(0.0, 2), CostMonitor(1.0, 2)
    assert [never.update(0.1), never.update(0.1)] == [0, 0] and not never.success
    assert [by_cost.update(0.5), by_cost.update(2.0), by_cost.update(0.5), by_cost.update(0.4)] == [1, 0, 1, 2]
    assert by_cost.success
