"""``dexwm bench sim-node``: achieved control-loop and camera rates of the simulated robot node, as JSON.

Starts ``dexwm_sim_node`` as a subprocess (its console script and ``config/sim_node.yaml``) once per requested
real-time factor, listens to ``/joint_states`` and ``/camera/color/image_raw`` over DDS for a while and reports
the rates from the messages' header stamps (the node clock at publication), so transport delays do not count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=8.0, help="wall time measured per real-time factor")
    parser.add_argument("--real-time-factors", type=float, nargs="+", default=[1.0, 5.0, 50.0],
                        help="real_time_factor values to run (50 = as fast as the machine allows)")
    parser.add_argument("--domain-id", type=int, default=151, help="ROS_DOMAIN_ID used for the measurement")


def _rate(stamps: list[float]) -> float | None:
    if len(stamps) < 3:
        return None
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def _measure(rtf: float, seconds: float, domain_id: int, params_file: Path) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image, JointState

    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env.setdefault("MUJOCO_GL", "egl")
    cmd = [str(Path(sys.executable).with_name("dexwm_sim_node")), "--ros-args", "--params-file", str(params_file),
           "-p", f"real_time_factor:={rtf}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node("sim_node_bench", context=context)
    stamps: dict[str, list[float]] = {"joint_states": [], "image": []}
    lock = threading.Lock()

    def keep(key):
        def cb(msg):
            with lock:
                stamps[key].append(msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec)
        return cb

    node.create_subscription(JointState, "/joint_states", keep("joint_states"), 100)
    node.create_subscription(Image, "/camera/color/image_raw", keep("image"), 20)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60.0
        while not stamps["joint_states"] and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        with lock:
            stamps["joint_states"].clear()
            stamps["image"].clear()
        time.sleep(seconds)
        with lock:
            js, im = list(stamps["joint_states"]), list(stamps["image"])
    finally:
        executor.shutdown()
        thread.join()
        node.destroy_node()
        rclpy.shutdown(context=context)
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    control = _rate(js)
    camera = _rate(im)
    from dexwm_ros.sim_node import load_node_config
    from dexwm_robot.scene import load_sim_config

    scene, _ = load_sim_config(load_node_config(str(params_file)).sim_config)
    camera_hz = load_node_config(str(params_file)).camera_rate_hz
    gaps = np.diff(js) if len(js) > 2 else np.zeros(1)
    return {
        "real_time_factor": rtf,
        "control_rate_target_hz": round(scene.control_rate_hz * rtf, 2),
        "control_rate_achieved_hz": None if control is None else round(control, 2),
        "achieved_real_time_factor": None if control is None else round(control / scene.control_rate_hz, 2),
        "control_period_max_ms": round(1e3 * float(gaps.max()), 1),
        "camera_rate_target_hz": round(camera_hz * rtf, 2),
        "camera_rate_achieved_hz": None if camera is None else round(camera, 2),
        "messages": {"joint_states": len(js), "image": len(im)},
    }


def run(args: argparse.Namespace) -> int:
    from dexwm_robot.config import config_dir

    params_file = config_dir() / "sim_node.yaml"
    report = {
        "benchmark": "sim_node",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "gl": os.environ.get("MUJOCO_GL", "egl")},
        "seconds_per_run": args.seconds,
        "runs": [_measure(rtf, args.seconds, args.domain_id, params_file) for rtf in args.real_time_factors],
    }
    print(json.dumps(report, indent=2))
    return 0
