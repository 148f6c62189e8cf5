"""Closed-loop rate of the planner node in the simulated ROS graph; prints one JSON line.

``python -m dexwm_ros.planner_node_bench [--checkpoint DIR] [--profile quick] [--steps 10]`` starts the simulator,
safety layer, arm / hand controllers and the planner node (console scripts, params files of ``config/``, a private
DDS domain), sends one reach goal of ``--steps`` control steps and reports the planner's own measurements from the
RunTask result: replans per second of task time (``loop_rate_hz``: camera frame -> plan -> executed waypoint ->
next frame), the mean replan time and the latency from a frame's arrival to its first waypoint being published.
Without ``--checkpoint`` a tiny random-initialised world model (56 x 56 input, 2-block predictor) is used.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dexwm_planner.benchmark.tiny_model import tiny_checkpoint
from dexwm_robot.config import config_dir


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; None where it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def run(args: argparse.Namespace) -> dict:
    import rclpy
    from rclpy.action import ActionClient

    from std_msgs.msg import String

    from dexwm_ros.controller_common import STATUS_QOS, STATUS_TOPIC
    from dexwm_ros.conversions import numpy_to_image
    from dexwm_interfaces.action import RunTask

    work = Path(tempfile.mkdtemp(prefix="dexwm_planner_bench_"))
    checkpoint = Path(args.checkpoint) if args.checkpoint else tiny_checkpoint(work / "model")
    env = dict(os.environ, ROS_DOMAIN_ID=str(args.domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    bin_dir = Path(sys.executable).parent
    specs = [("dexwm_sim_node", "sim_node.yaml", []), ("dexwm_safety_node", "controllers.yaml", []),
             ("dexwm_arm_controller_node", "controllers.yaml", []),
             ("dexwm_hand_controller_node", "controllers.yaml", []),
             ("dexwm_planner_node", "planner_node.yaml",
              [f"checkpoint:={checkpoint}", f"profile:={args.profile}", f"device:={args.device}",
               f"torch_threads:={args.threads}"])]
    procs = []
    for script, params, overrides in specs:
        cmd = [str(bin_dir / script), "--ros-args", "--params-file", str(config_dir() / params)]
        for o in overrides:
            cmd += ["-p", o]
        procs.append(subprocess.Popen(cmd, env=env, stdout=open(work / f"{script}.log", "w"),
                                      stderr=subprocess.STDOUT))
    rclpy.init(domain_id=args.domain)
    node = rclpy.create_node("planner_bench")
    try:
        client = ActionClient(node, RunTask, "/dexwm/run_task")
        if not client.wait_for_server(timeout_sec=args.startup_timeout):
            raise RuntimeError(f"the planner's RunTask server did not come up in {args.startup_timeout:g} s "
                               f"(logs in {work})")
        status: dict = {}
        node.create_subscription(String, f"/{STATUS_TOPIC}", lambda m: status.update(json.loads(m.data)), STATUS_QOS)
        end = time.monotonic() + args.startup_timeout
        while status.get("state") != "READY" and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        if status.get("state") != "READY":
            raise RuntimeError(f"the safety layer is not READY ({status.get('state')}; logs in {work})")
        image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
        goal = RunTask.Goal(task="reach", max_steps=args.steps, goal_image=numpy_to_image(image, "rgb8"))
        future = client.send_goal_async(goal)
        rclpy.spin_until_future_complete(node, future, timeout_sec=60)
        result_future = future.result().get_result_async()
        rclpy.spin_until_future_complete(node, result_future, timeout_sec=args.steps * 30.0)
        result = result_future.result().result
        cpu_s = {script: process_cpu_seconds(p.pid) for (script, _, _), p in zip(specs, procs)}
    finally:
        node.destroy_node()
        rclpy.shutdown()
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    metrics = dict(zip(result.metric_names, result.metrics))
    return {"benchmark": "planner_node_loop", "profile": args.profile, "device": args.device,
            "torch_threads": args.threads, "checkpoint": str(checkpoint) if args.checkpoint else "tiny random-init",
            "reason": result.reason, "message": result.message, "steps": result.steps,
            "duration_s": round(result.duration, 3),
            **{k: round(v, 4) for k, v in metrics.items()},
            # CPU time each node used from its start to the task's end (start-up included): where the cores went
            "cpu_s_per_node": cpu_s, "cpu_count": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="world-model checkpoint folder (default: a tiny random-init model)")
    parser.add_argument("--profile", default="quick", help="planner profile of config/mpc.yaml (default quick)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads of the planner node")
    parser.add_argument("--steps", type=int, default=10, help="control steps of the reach goal")
    parser.add_argument("--domain", type=int, default=157, help="ROS_DOMAIN_ID of the private graph")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
