"""Regenerate the committed test bag: a real reach episode (suite episode 0) recorded from the real ROS graph.

    python -m dexwm_ros.bags.make_test_bag [--out test/data/bags/reach_episode0] [--episode 0] [--camera-rate 5]

Started as processes through their console scripts and ``config/*.yaml``: ``dexwm_sim_node`` (object layout of the
episode's seed), ``dexwm_description_node``, ``dexwm_safety_node``, ``dexwm_arm_controller_node``,
``dexwm_hand_controller_node`` and ``dexwm_recorder_node`` (its default topics, zstd MCAP chunks). This script
stands in for the planner: it computes the scripted demonstrator's reach (``Demonstrator.plan_reach`` from the
episode's seeded start posture, ``dexwm_planner.tasks.suite`` / ``config/suites/reach.json``), sends a waypoint to
the start posture, then every demonstrator waypoint to ``/dexwm/joint_waypoint`` one after the other (each once
the safety layer's command for the previous one has been executed), and finally one waypoint that takes the hand
through the table, which the safety layer must reject (so the bag holds a rejection too). What it sends is
deterministic (seeded suite entry, deterministic IK); the recorded timing is the real graph's.

Prints one JSON line: messages per topic, bag size, the reach distance at the end (wrist + fingertips to the
goal, from the last recorded /joint_states) and whether it is within the task's success distance.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dexwm_ros.controller_common import COMMAND_TOPIC, STATUS_QOS, STATUS_TOPIC, WAYPOINT_TOPIC
from dexwm_ros.conversions import duration_to_seconds, seconds_to_duration
from dexwm_ros.graph_probe import GraphProbe
from dexwm_robot.joint_names import ALL_JOINT_NAMES
from dexwm_ros.node_process import NodeProcess

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_OUT = ROOT / "test" / "data" / "bags" / "reach_episode0"
DOMAIN_ID = 151  # used by nothing else (tests pick their own)
WAIT = 60.0  # s: bound on every wait (a loaded 2-core machine)
START_MOVE_S = 2.0  # requested duration of the move to the episode's start posture


def plan_episode(episode: int) -> dict:
    """The episode's seed, start posture, demonstrator waypoints and goal posture (23 joints each)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dexwm_hw.sim.robot import PandaAllegroSim
    from dexwm_planner.tasks.config import load_tasks_config
    from dexwm_planner.tasks.demonstrator import ReachGoal, demonstrator_for
    from dexwm_planner.tasks.episodes import goal_keypoints_for, start_joints
    from dexwm_planner.tasks.suite import load_suite, select

    cfg = load_tasks_config()
    (entry,) = select(load_suite("reach"), [episode])
    seed = int(entry["seed"])
    sim = PandaAllegroSim(render=False)
    try:
        start = start_joints(seed, sim, cfg)
        sim.reset(seed, joints=start)
        demo = demonstrator_for(sim, cfg)
        goal = ReachGoal.from_dict(entry["reach_goal"])
        goal_q = demo.reach_goal_joints(goal)
        waypoints = demo.plan_reach(goal)
        if goal_q is None or waypoints is None:
            raise RuntimeError(f"reach episode {episode}: the demonstrator finds no plan")
        goal_points = goal_keypoints_for(sim, goal_q)
        through_table = np.asarray(sim.scene_cfg.home, dtype=np.float64).copy()
        through_table[[1, 3]] = [1.2, -1.0]  # joint values within limits, the hand below the table top
        return {"seed": seed, "object": entry["object"], "start": start, "waypoints": waypoints,
                "goal_points": goal_points, "through_table": through_table, "control_dt": sim.control_dt,
                "reach_distance": cfg.success.reach_distance, "distance_fn": lambda q: float(np.linalg.norm(
                    goal_keypoints_for(sim, q) - goal_points, axis=1).mean()), "sim": sim}
    except BaseException:
        sim.close()
        raise


def _launch(script: str, params: str, log_dir: Path, *overrides: str) -> NodeProcess:
    return NodeProcess(script, log_dir / f"{script}.log", domain_id=DOMAIN_ID, params=params, overrides=overrides,
                       ros_log_dir=log_dir / "ros")


class Driver(GraphProbe):
    """The probe node standing in for the planner: sends waypoints, keeps the safety layer's commands."""

    def __init__(self, processes: list) -> None:
        super().__init__("make_test_bag_driver", DOMAIN_ID, processes, wait_s=WAIT)
        self.collect(JointTrajectory, "/" + COMMAND_TOPIC)
        self.collect(String, "/" + STATUS_TOPIC, STATUS_QOS)
        self.track_joints()
        self.pub = self.node.create_publisher(JointTrajectory, WAYPOINT_TOPIC, 10)

    @property
    def commands(self) -> list:
        return self.got("/" + COMMAND_TOPIC)

    @property
    def status(self) -> dict | None:
        msg = self.last("/" + STATUS_TOPIC)
        return None if msg is None else json.loads(msg.data)

    def send(self, q: np.ndarray, duration: float) -> None:
        msg = JointTrajectory(joint_names=list(ALL_JOINT_NAMES))
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.points = [JointTrajectoryPoint(positions=[float(x) for x in q],
                                           time_from_start=seconds_to_duration(duration))]
        self.pub.publish(msg)

    def move(self, q: np.ndarray, duration: float) -> None:
        """Send one waypoint and wait until the safety layer's command for it has been executed."""
        before = len(self.commands)
        self.send(q, duration)
        command = self.wait_for(lambda: len(self.commands) > before and self.commands[before], "the safety command")
        if command.header.frame_id == "hold":
            raise RuntimeError(f"the safety layer held the robot instead of moving: {self.status}")
        time.sleep(duration_to_seconds(command.points[0].time_from_start) + 0.05)


def record(out: Path, episode: int, camera_rate: float, log_dir: Path) -> dict:
    from std_srvs.srv import Trigger

    from dexwm_ros.bags.reading import BagReader

    plan = plan_episode(episode)
    log_dir.mkdir(parents=True, exist_ok=True)
    graph = [
        _launch("dexwm_sim_node", "sim_node.yaml", log_dir, f"seed:={plan['seed']}", f"camera_rate_hz:={camera_rate}"),
        _launch("dexwm_description_node", "description.yaml", log_dir),
        _launch("dexwm_safety_node", "controllers.yaml", log_dir),
        _launch("dexwm_arm_controller_node", "controllers.yaml", log_dir),
        _launch("dexwm_hand_controller_node", "controllers.yaml", log_dir),
    ]
    recorder = _launch("dexwm_recorder_node", "recorder_node.yaml", log_dir, f"output:={out}")
    driver = None
    try:
        driver = Driver([*graph, recorder])
        # every hop connected, the recorder included (it subscribes once it has seen each publisher)
        driver.wait_connected([(topic, 0, subs) for topic, subs in [
            ("/dexwm/joint_waypoint", 2), ("/dexwm/safety/command", 3), ("/joint_states", 3),
            ("/camera/color/image_raw", 2), ("/panda_arm_controller/joint_trajectory", 1),
            ("/allegro_hand_position_controller/commands", 1), ("/tf_static", 1), ("/robot_description", 1),
            ("/dexwm/safety/status", 2)]])
        reset = driver.call(Trigger, "/dexwm/sim/reset", Trigger.Request())
        if not reset.success:
            raise RuntimeError(f"the simulator's reset failed: {reset.message}")
        driver.wait_for(lambda: driver.status and driver.status.get("accepting"), "the safety layer accepting")
        driver.move(plan["start"], START_MOVE_S)
        for q in plan["waypoints"]:
            driver.move(q, plan["control_dt"])
        time.sleep(0.5)
        final = driver.joints().copy()
        rejected = driver.status["counts"]["rejected"]
        driver.send(plan["through_table"], 2.0)
        driver.wait_for(lambda: driver.status["counts"]["rejected"] > rejected, "the rejection of the probe waypoint")
        time.sleep(1.0)
    finally:
        if driver is not None:
            driver.close()
        recorder.stop(grace_s=30)
        for proc in graph:
            proc.stop(grace_s=30)
        plan["sim"].close()
    recorder_rc = recorder.returncode
    if recorder_rc != 0:
        raise RuntimeError(f"the recorder exited with {recorder_rc}; see {log_dir}/dexwm_recorder_node.log")
    with BagReader(out) as bag:
        counts = {name: t.count for name, t in bag.topics.items()}
        duration = (bag.end_ns - bag.start_ns) * 1e-9
    distance = plan["distance_fn"](final)
    return {"bag": str(out), "bytes": sum(f.stat().st_size for f in out.iterdir()), "duration_s": round(duration, 2),
            "messages": counts, "waypoints_sent": len(plan["waypoints"]) + 2, "seed": plan["seed"],
            "object": plan["object"], "reach_distance_m": round(distance, 4),
            "reach_success": distance < plan["reach_distance"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dexwm_ros.bags.make_test_bag", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="bag folder to create (must not exist)")
    parser.add_argument("--episode", type=int, default=0, help="reach suite episode")
    parser.add_argument("--camera-rate", type=float, default=5.0, help="camera frames per second")
    parser.add_argument("--log-dir", type=Path, default=ROOT / "log" / "make_test_bag", help="node logs")
    args = parser.parse_args(argv)
    if args.out.exists():
        raise SystemExit(f"{args.out} exists already; remove it to regenerate the bag")
    print(json.dumps(record(args.out, args.episode, args.camera_rate, args.log_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
