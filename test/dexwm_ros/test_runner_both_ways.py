"""One suite episode both ways through the one task runner (dexwm_planner.tasks.runner), with the tiny checkpoint
and the quick profile: `dexwm bench tasks` (simulator port) and the planner node's start-up task against the
simulated graph (ROS port: sim node started in the episode's start state, safety layer, controllers). The step
sequence (replans in order, the executed steps before each, the plan length) and the outcome (success, stop by
the step limit, executed steps, replans) are the same."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("dexwm_interfaces.action")

from dexwm_cli.main import main  # noqa: E402
from dexwm_interfaces.msg import PlanStatus  # noqa: E402
from dexwm_planner.benchmark.tiny_model import tiny_checkpoint  # noqa: E402
from dexwm_ros.planner_node import PLAN_STATUS_QOS  # noqa: E402
from dexwm_planner.tasks.config import load_tasks_config  # noqa: E402
from dexwm_planner.tasks.episode_file import read_episode_file, write_episode_files  # noqa: E402
from dexwm_ros.graph_probe import GraphProbe  # noqa: E402
from dexwm_ros.node_process import NodeProcess  # noqa: E402

DOMAIN_ID = 167  # its own DDS domain
ROOT = Path(__file__).resolve().parents[2]
WAIT = 120.0  # s wall: a generous bound for a loaded 2-core machine (never a timing assertion)
MAX_STEPS = 2


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runner_both_ways")
    json_path, _ = write_episode_files("reach", 0, folder / "episode")
    return folder, tiny_checkpoint(folder / "model"), json_path


def _bench(folder: Path, checkpoint: Path) -> tuple[dict, dict]:
    before = torch.get_num_threads()
    try:
        rc = main(["bench", "tasks", "--task", "reach", "--episodes", "0", "--checkpoint", str(checkpoint),
                   "--profile", "quick", "--device", "cpu", "--threads", "1", "--max-steps", str(MAX_STEPS),
                   "--out", str(folder / "bench")])
    finally:
        torch.set_num_threads(before)
    assert rc in (0, None)
    summary = json.loads((folder / "bench" / "summary.json").read_text())
    return json.loads((folder / "bench" / "reach" / "episode_0000.json").read_text()), summary


def _launch(script: str, params: str, log_dir: Path, *overrides: str, name: str | None = None) -> NodeProcess:
    return NodeProcess(script, log_dir / f"{name or script}.log", domain_id=DOMAIN_ID, params=params,
                       overrides=overrides, ros_log_dir=ROOT / "log" / "ros")


def _node(folder: Path, checkpoint: Path, episode_file: Path) -> tuple[dict, list[PlanStatus], str]:
    ep = read_episode_file(episode_file)
    start = "[" + ",".join(repr(float(x)) for x in ep["start_joints"]) + "]"
    logs = folder / "logs"
    result_file = folder / "node_result.json"
    probe = GraphProbe("runner_both_ways_probe", DOMAIN_ID, threads=2, wait_s=WAIT)
    probe.collect(PlanStatus, "/dexwm/plan_status", PLAN_STATUS_QOS)  # history too: no status lost to discovery
    procs = [_launch("dexwm_sim_node", "sim_node.yaml", logs, f"seed:={int(ep['seed'])}", f"start_joints:={start}"),
             _launch("dexwm_safety_node", "controllers.yaml", logs, "image_timeout:=4.0"),
             _launch("dexwm_arm_controller_node", "controllers.yaml", logs),
             _launch("dexwm_hand_controller_node", "controllers.yaml", logs)]
    planner = _launch("dexwm_planner_node", "planner_node.yaml", logs, f"checkpoint:={checkpoint}",
                      "profile:=quick", "device:=cpu", "torch_threads:=1", "image_timeout:=2.0", "task:=reach",
                      f"episode_file:={episode_file}", f"result_file:={result_file}", f"max_steps:={MAX_STEPS}",
                      "startup_timeout:=120.0")
    try:
        try:
            rc = planner.wait(3 * WAIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the start-up task did not end:\n{planner.log()}")
        out = planner.log()
        assert rc == 3, out  # EXIT_TASK_FAILED: the tiny random model does not reach the goal
        assert "Traceback" not in out, out
        statuses = list(probe.got("/dexwm/plan_status"))
    finally:
        probe.close()
        for p in procs:
            p.stop()
        if planner.poll() is None:
            planner.stop()
    return json.loads(result_file.read_text()), statuses, out


def test_one_suite_episode_runs_the_same_steps_in_the_benchmark_and_the_node(episode):
    folder, checkpoint, episode_file = episode
    bench, summary = _bench(folder, checkpoint)
    node, statuses, log = _node(folder, checkpoint, episode_file)
    horizon = summary["planner"]["reach"]["horizon"]
    execute_steps = summary["planner"]["reach"]["execute_steps"]
    threshold = load_tasks_config().success.reach_distance

    # the step sequence: replan k starts after k x execute_steps executed steps and plans `horizon` waypoints
    # (each plan is published as a PLANNING status with its waypoints, then EXECUTING; the state changes in between
    # republish the last status, so a plan is the PLANNING status right before an EXECUTING one)
    planned = [(s.step, s.num_waypoints) for s, after in zip(statuses, statuses[1:])
               if s.state == PlanStatus.STATE_PLANNING and s.num_waypoints > 0
               and after.state == PlanStatus.STATE_EXECUTING]
    bench_seq = [(r["step"] * execute_steps, horizon) for r in bench["replans"]]
    assert [r["step"] for r in bench["replans"]] == list(range(MAX_STEPS))
    assert planned == bench_seq, log[-3000:]
    assert all(r["ticks"] > 0 for r in bench["replans"])  # every replan's waypoints were executed in the sim
    # the outcome: no success, ended by the step limit after the same replans and executed steps
    assert bench["success"] is False and bench["steps"] == MAX_STEPS
    assert node["success"] is False and node["reason"] == "TIMEOUT"
    assert node["message"] == f"max_steps ({MAX_STEPS}) reached"
    assert node["steps"] == bench["steps"] * execute_steps
    assert node["metrics"]["replans"] == len(bench["replans"])
    # both scored against the episode's goal state, and both still away from it
    assert bench["final_distance"] > threshold and node["metrics"]["keypoint_distance_m"] > threshold
    assert np.isfinite(node["final_cost"]) and all(c is not None for c in bench["costs"])
