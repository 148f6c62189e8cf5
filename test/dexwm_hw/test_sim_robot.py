import mujoco
import numpy as np
import pytest

from dexwm_hw.sim.controller import JointInterpolator, min_duration
from dexwm_hw.sim.robot import PandaAllegroSim
from dexwm_robot.scene import KEYPOINT_SITES, NUM_JOINTS, ROBOT_JOINTS


@pytest.fixture(scope="module")
def sim():
    s = PandaAllegroSim()
    yield s
    s.close()


def test_composition_has_arm_hand_objects_camera(sim):
    m = sim.model
    assert m.nu == NUM_JOINTS == 23
    assert m.nq == 23 + 7 * len(sim.object_names)
    assert len(sim.object_names) >= 6
    assert len({m.geom(n).type[0] for n in sim.object_names}) >= 4  # different shapes
    names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, m.actuator_trnid[i, 0]) for i in range(m.nu)]
    assert tuple(names) == ROBOT_JOINTS
    assert all(m.body_gravcomp[m.body(b).id] == 1.0 for b in ("panda/link3", "allegro/palm", "allegro/ff_distal"))


def test_palm_normal_points_along_flange_axis(sim):
    sim.reset(0)
    _, flange = sim.site_pose("panda/attachment_site")
    _, palm = sim.site_pose("allegro/palm_center")
    assert palm[:, 0] @ flange[:, 2] == pytest.approx(1.0, abs=1e-6)  # palm body +x is the palm normal


def test_reset_places_objects_apart_and_on_table(sim):
    sim.reset(3)
    pos = np.array([sim.object_pose(n).position for n in sim.object_names])
    d = np.linalg.norm(pos[:, None, :2] - pos[None, :, :2], axis=-1) + np.eye(len(pos))
    assert d.min() >= sim.scene_cfg.object_min_separation - 0.01  # settling may nudge them a little
    assert np.all(pos[:, 2] > sim.scene_cfg.table_height) and np.all(pos[:, 2] < 0.1)
    sim.reset(4)
    pos2 = np.array([sim.object_pose(n).position for n in sim.object_names])
    assert np.abs(pos2 - pos).max() > 0.02  # another seed, another layout


def test_gravity_compensated_robot_holds_its_pose(sim):
    sim.reset(0)
    q0 = sim.joints
    for _ in range(int(1.0 / sim.control_dt)):
        sim.step()
    assert np.abs(sim.joints[:7] - q0[:7]).max() < 2e-3


def test_interpolating_controller_reaches_waypoint_within_limits(sim):
    sim.reset(1)
    target = sim.joints.copy()
    target[0] += 0.3
    target[3] += 0.2
    target[8:11] += 0.5
    ticks = sim.move_to(target, settle=0.5)
    assert ticks * sim.control_dt >= 0.3 / 2.175 * 1.875 - 1e-9
    assert np.abs(sim.joints - sim.clip(target)).max() < 0.02


def test_waypoints_are_clipped_to_joint_limits(sim):
    sim.reset(1)
    sim.command(np.full(NUM_JOINTS, 10.0))
    assert np.all(sim._interp.goal <= sim.joint_high)
    with pytest.raises(ValueError):
        sim.command(np.zeros(5))


def test_min_jerk_profile():
    interp = JointInterpolator(np.zeros(2), np.array([1.0, -2.0]), 2.0)
    assert np.allclose(interp(0.0), 0) and np.allclose(interp(2.0), [1, -2]) and np.allclose(interp(1.0), [0.5, -1])
    assert min_duration(np.zeros(1), np.ones(1), np.ones(1)) == pytest.approx(1.875)
    with pytest.raises(ValueError):
        JointInterpolator(np.zeros(2), np.array([np.nan, 0]), 1.0)


def test_camera_renders_scene_and_projects_keypoints_into_image(sim):
    sim.reset(0)
    img = sim.render()
    cfg = sim.camera_cfg
    assert img.shape == (cfg.height, cfg.width, 3) and img.dtype == np.uint8
    assert img.std() > 10
    cam = sim.camera()
    assert cam.K[0, 2] == cfg.width / 2
    # the camera looks down by the configured pitch
    forward = cam.R_wc[:, 2]
    assert np.degrees(np.arcsin(-forward[2])) == pytest.approx(cfg.pitch_deg, abs=1e-6)
    # a rendered object appears where the projection says it is
    name = sim.object_names[0]
    uv = cam.project(cam.world_to_camera(sim.object_pose(name).position))
    u, v = int(round(uv[0])), int(round(uv[1]))
    rgba = np.array(sim.model.geom(name).rgba[:3]) * 255
    patch = img[max(v - 2, 0): v + 3, max(u - 2, 0): u + 3].reshape(-1, 3).astype(float)
    assert np.min(np.linalg.norm(patch - rgba, axis=1)) < 90
    kp = cam.project(cam.world_to_camera(sim.keypoints_world()))
    assert kp.shape == (len(KEYPOINT_SITES), 2)
