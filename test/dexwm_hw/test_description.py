"""The robot description: the committed URDF is what the simulator's scene generates, its kinematics match the
simulator and the batched FK, its names are the drivers', and the description node serves it latched."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch

from dexwm_hw.description.generate import MOUNT_JOINT, URDF_FILE, build_urdf
from dexwm_hw.description.urdf_model import matrix_to_rpy, parse_urdf, rpy_to_matrix
from dexwm_robot.joint_names import ALL_JOINT_NAMES, ARM_JOINT_NAMES, HAND_JOINT_NAMES
from dexwm_robot.scene import ROBOT_JOINTS, build_model
from dexwm_model.kinematics.panda_allegro import PandaAllegroFK

ROOT = Path(__file__).resolve().parents[2]
URDF = ROOT / "urdf" / URDF_FILE
TIP_SITES = ("ff_tip", "mf_tip", "rf_tip", "th_tip")


@pytest.fixture(scope="module")
def robot():
    return parse_urdf(URDF.read_text())


@pytest.fixture(scope="module")
def model():
    return build_model()


def test_committed_urdf_is_what_the_scene_generates():
    assert URDF.read_text() == build_urdf(), "urdf/panda_allegro.urdf is stale: run python -m dexwm_hw.description"


def test_names_follow_the_ros_drivers(robot):
    movable = [j.name for j in robot.movable_joints]
    assert sorted(movable) == sorted(ALL_JOINT_NAMES)
    assert robot.root == "panda_link0"
    for i in range(9):
        assert f"panda_link{i}" in robot.links
    for j in HAND_JOINT_NAMES:
        assert robot.joint(j).child == "ah_link_" + j[len("ah_joint"):]
    mount = robot.joint(MOUNT_JOINT)
    assert (mount.type, mount.parent, mount.child) == ("fixed", "panda_link8", "ah_palm_link")
    # franka_description's flange: 0.107 m along link7's z, no rotation
    flange = robot.joint("panda_joint8")
    expected = np.eye(4)
    expected[2, 3] = 0.107
    assert np.allclose(flange.origin, expected)
    meshes = [m for ms in robot.meshes.values() for m in ms]
    assert "package://franka_description/meshes/visual/link0.dae" in meshes
    assert "package://allegro_hand_description/meshes/link_0.0.STL" in meshes
    assert all(m.startswith(("package://franka_description/", "package://allegro_hand_description/"))
               for m in meshes)


def test_joint_limits_are_the_simulator_ones(robot, model):
    for mj_name, ros_name in zip(ROBOT_JOINTS, ALL_JOINT_NAMES):
        lo, hi = model.jnt_range[model.joint(mj_name).id]
        j = robot.joint(ros_name)
        assert (j.lower, j.upper) == pytest.approx((lo, hi), abs=1e-9), ros_name
        assert j.effort > 0 and j.velocity > 0


def _random_q(model, rng, n):
    ids = [model.joint(j).id for j in ROBOT_JOINTS]
    return rng.uniform(model.jnt_range[ids, 0], model.jnt_range[ids, 1], size=(n, len(ids)))


def test_urdf_fk_matches_mujoco_and_the_batched_fk(robot, model):
    rng = np.random.default_rng(7)
    qs = _random_q(model, rng, 20)
    data = mujoco.MjData(model)
    fk = PandaAllegroFK.from_mujoco(model)
    sites = ["allegro/palm_center", "allegro/wrist"] + [f"allegro/{s}" for s in TIP_SITES]
    batched = fk.positions(torch.tensor(qs, dtype=torch.float64), sites).numpy()
    b0 = model.body("panda/link0").id
    worst = 0.0
    for k, q in enumerate(qs):
        for name, v in zip(ROBOT_JOINTS, q):
            data.qpos[model.jnt_qposadr[model.joint(name).id]] = v
        mujoco.mj_kinematics(model, data)
        T0 = np.eye(4)
        T0[:3, :3], T0[:3, 3] = data.xmat[b0].reshape(3, 3), data.xpos[b0]
        poses = robot.fk(dict(zip(ALL_JOINT_NAMES, q)))
        for i, site in enumerate(sites):
            p = (T0 @ poses["ah_kp_" + site.split("/")[1]])[:3, 3]
            worst = max(worst, np.linalg.norm(p - data.site_xpos[model.site(site).id]),
                        np.linalg.norm(p - batched[k, i]))
        palm = T0 @ poses["ah_palm_link"]
        body = model.body("allegro/palm").id
        assert np.allclose(palm[:3, :3], data.xmat[body].reshape(3, 3), atol=1e-6)
        for i in range(1, 8):
            link = T0 @ poses[f"panda_link{i}"]
            assert np.linalg.norm(link[:3, 3] - data.xpos[model.body(f"panda/link{i}").id]) < 1e-6
    assert worst < 1e-3, f"fingertip/palm positions differ by {worst * 1000:.4f} mm"


def test_moving_a_joint_moves_only_its_subtree(robot):
    q = dict.fromkeys(ALL_JOINT_NAMES, 0.3)
    base = robot.fk(q)
    q2 = dict(q, ah_joint11=q["ah_joint11"] + 0.5)
    moved = robot.fk(q2)
    assert not np.allclose(base["ah_link_14"], moved["ah_link_14"])
    assert np.allclose(base["ah_link_24"], moved["ah_link_24"])
    assert np.allclose(base[f"panda_link{len(ARM_JOINT_NAMES)}"], moved[f"panda_link{len(ARM_JOINT_NAMES)}"])


@pytest.mark.parametrize("rpy", [(0.3, -0.4, 2.0), (0.0, math.pi / 2, 0.7), (0.0, -math.pi / 2, -1.2),
                                 (-3.0, 0.1, 3.1)])
def test_rpy_round_trip_including_gimbal_lock(rpy):
    R = rpy_to_matrix(rpy)
    assert np.allclose(rpy_to_matrix(matrix_to_rpy(R)), R, atol=1e-12)


def test_parser_rejects_broken_trees():
    link = '<link name="{}"/>'
    joint = '<joint name="{}" type="fixed"><parent link="{}"/><child link="{}"/></joint>'
    with pytest.raises(ValueError, match="child link 'c' is not defined"):
        parse_urdf(f'<robot name="r">{link.format("a")}{joint.format("j", "a", "c")}</robot>')
    with pytest.raises(ValueError, match="exactly one root link"):
        parse_urdf(f'<robot name="r">{link.format("a")}{link.format("b")}</robot>')
    with pytest.raises(ValueError, match="needs <limit"):
        parse_urdf(f'<robot name="r">{link.format("a")}{link.format("b")}<joint name="j" type="revolute">'
                   '<parent link="a"/><child link="b"/><axis xyz="0 0 1"/></joint></robot>')
    with pytest.raises(ValueError, match="positions missing"):
        parse_urdf(URDF.read_text()).fk({})


def test_description_node_serves_the_urdf_latched_and_the_joints_on_tf(tmp_path):
    rclpy = pytest.importorskip("rclpy")
    pytest.importorskip("tf2_msgs.msg")
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from tf2_msgs.msg import TFMessage

    from dexwm_ros.conversions import quaternion_to_rotation

    domain = 191
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    exe = Path(sys.executable).with_name("dexwm_description_node")
    proc = subprocess.Popen([str(exe), "--ros-args", "--params-file", str(ROOT / "config" / "description.yaml"),
                             "-p", "publish_tf:=true", "-p", "tf_skip_frames:=[panda_link1]"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    robot = parse_urdf(URDF.read_text())
    q = dict(zip(ALL_JOINT_NAMES, np.linspace(0.1, 0.5, len(ALL_JOINT_NAMES))))
    try:
        node = rclpy.create_node("description_probe", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        got, tf, tf_static = [], {}, {}
        time.sleep(1.0)  # subscribe after the node has published: only a latched topic still delivers
        qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(String, "/robot_description", lambda m: got.append(m.data), qos)

        def keep(store):
            def cb(msg):
                for t in msg.transforms:
                    T = np.eye(4)
                    r, p = t.transform.rotation, t.transform.translation
                    T[:3, :3] = quaternion_to_rotation([r.w, r.x, r.y, r.z])
                    T[:3, 3] = [p.x, p.y, p.z]
                    store[t.child_frame_id] = (t.header.frame_id, T)
            return cb

        node.create_subscription(TFMessage, "/tf", keep(tf), 100)
        node.create_subscription(TFMessage, "/tf_static", keep(tf_static), qos)
        pub = node.create_publisher(JointState, "/joint_states", 10)
        state = JointState(name=list(ALL_JOINT_NAMES), position=[float(v) for v in q.values()])
        end = time.monotonic() + 30
        while not (got and "ah_link_33" in tf and "ah_kp_th_tip" in tf_static) and time.monotonic() < end \
                and proc.poll() is None:
            pub.publish(state)
            executor.spin_once(timeout_sec=0.05)
        assert got, f"no /robot_description received; node output:\n{proc.stdout.read() if proc.poll() else ''}"
        assert got[0] == URDF.read_text()
        assert "ah_link_33" in tf and "ah_kp_th_tip" in tf_static, f"tf: {sorted(tf)}, static: {sorted(tf_static)}"
        assert "panda_link1" not in tf and "panda_link2" in tf  # skipped frames are left to others
        assert tf_static["ah_palm_link"][0] == "panda_link8"
        # chaining the published transforms from the palm to the thumb tip reproduces the URDF's kinematics
        frames = {**tf, **tf_static}
        T, frame = np.eye(4), "ah_kp_th_tip"
        while frame != "ah_palm_link":
            parent, T_parent_child = frames[frame]
            T, frame = T_parent_child @ T, parent
        poses = robot.fk(q)
        assert np.allclose(T, np.linalg.inv(poses["ah_palm_link"]) @ poses["ah_kp_th_tip"], atol=1e-9)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in out, out

    bad = tmp_path / "bad.urdf"
    bad.write_text('<robot name="r"><link name="a"/></robot>')
    done = subprocess.run([str(exe), "--ros-args", "-p", f"urdf_file:={bad}"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "movable joints [] are not the robot's" in done.stderr
