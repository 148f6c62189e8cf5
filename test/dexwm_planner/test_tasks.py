"""Success tests, the hold requirement, IK and the verified lift of the scripted demonstrator (real MuJoCo)."""

import numpy as np
import pytest

from dexwm_hw.sim.robot import PandaAllegroSim
from dexwm_planner.tasks.config import load_tasks_config
from dexwm_planner.tasks.demonstrator import Demonstrator, ReachGoal, demonstrator_for, plan_lift
from dexwm_planner.tasks.episodes import goal_keypoints_for
from dexwm_planner.tasks.grasp import execute, palm_down_rotation, palm_down_seed
from dexwm_planner.tasks.ik import ArmIK, rotation_error
from dexwm_planner.tasks.success import SuccessTracker, TaskGoal, TaskMonitor, hand_points, measure


@pytest.fixture(scope="module")
def sim():
    s = PandaAllegroSim(render=False)
    yield s
    s.close()


@pytest.fixture(scope="module")
def cfg():
    return load_tasks_config()


def test_tracker_needs_consecutive_ticks():
    t = SuccessTracker(10)
    for _ in range(9):
        assert not t.update(True)
    assert not t.update(False)  # broken at 9: the count starts over
    assert t.held == 0 and t.max_held == 9
    for _ in range(9):
        assert not t.update(True)
    assert t.update(True)  # the tenth consecutive tick
    assert t.success_tick == 20
    assert t.update(False)  # success, once reached, is kept
    with pytest.raises(ValueError, match="hold_ticks"):
        SuccessTracker(0)


def test_goal_validation_messages():
    with pytest.raises(ValueError, match="task must be one of"):
        TaskGoal("push", "red_cube", 0.02)
    with pytest.raises(ValueError, match="goal_keypoints"):
        TaskGoal("reach", "red_cube", 0.02)
    with pytest.raises(ValueError, match=r"shape \(5, 3\)"):
        TaskGoal("reach", "red_cube", 0.02, goal_keypoints=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="goal_object_position"):
        TaskGoal("place", "red_cube", 0.02)


def test_ik_reaches_palm_target_within_5mm(sim, cfg):
    sim.reset(0)
    ik = ArmIK.for_sim(sim, cfg.ik)
    home_wrist = sim.scene_cfg.home_arm[6]
    rng = np.random.default_rng(0)
    for _ in range(5):
        target = np.array([rng.uniform(0.42, 0.65), rng.uniform(-0.2, 0.2), rng.uniform(0.08, 0.25)])
        yaw = rng.uniform(-1.5, 0.4)
        R = palm_down_rotation(yaw)
        res = ik.solve(palm_down_seed(sim.joints, target, yaw, home_wrist), target, R)
        assert res.converged
        assert np.all(res.joints[:7] >= sim.joint_low[:7]) and np.all(res.joints[:7] <= sim.joint_high[:7])
        # check with the simulator's own kinematics, not the solver's
        state = sim.get_state()
        sim.data.qpos[ik.robot_qpos_adr] = res.joints
        import mujoco

        mujoco.mj_forward(sim.model, sim.data)
        pos, rot = sim.site_pose("allegro/palm_center")
        sim.set_state(state)
        assert np.linalg.norm(pos - target) < 0.005
        assert np.linalg.norm(rotation_error(R, rot)) < 0.02
    far = ik.solve(sim.joints, np.array([1.5, 0.0, 0.2]), palm_down_rotation(0.0))
    assert not far.converged  # out of reach: reported, not faked
    with pytest.raises(ValueError, match="IK seed"):
        ik.solve(np.zeros(7), np.zeros(3))


def test_reach_success_and_failure(sim, cfg):
    sim.reset(5)
    demo = Demonstrator(sim, cfg)
    goal = demo.draw_reach_goal(np.random.default_rng(5), "blue_ball")
    assert goal is not None
    q = demo.reach_goal_joints(goal)
    target = TaskGoal("reach", "blue_ball", sim.object_pose("blue_ball").position[2], goal_keypoints_for(sim, q))
    # failing case: the hand is still at home, far above
    m0 = measure(sim, target, cfg.success)
    assert not m0["reach"] and m0["reach_distance"] > cfg.success.reach_distance
    monitor = TaskMonitor(target, cfg.success)
    execute(sim, demo.plan_reach(goal), on_tick=monitor.update)
    assert monitor.success
    assert monitor.last["reach_distance"] < 0.01  # the scripted reach lands on the goal
    np.testing.assert_allclose(hand_points(sim), target.goal_keypoints, atol=0.02)


def test_hold_is_broken_by_a_single_failing_tick(sim, cfg):
    """Alternate between a real succeeding and a real failing state: 9 good ticks are not enough."""
    sim.reset(5)
    start_pts = hand_points(sim)
    good = sim.get_state()
    target = TaskGoal("reach", "blue_ball", 0.03, goal_keypoints=start_pts)
    moved = sim.joints
    moved[0] += 0.8
    sim.move_to(moved)
    bad = sim.get_state()
    monitor = TaskMonitor(target, cfg.success)
    for state, n in ((good, 9), (bad, 1), (good, 9)):
        sim.set_state(state)
        for _ in range(n):
            monitor.update(sim)
    assert not monitor.success and monitor.trackers["reach"].max_held == 9
    sim.set_state(good)
    monitor.update(sim)
    assert monitor.success


def test_plan_lift_restores_state_and_its_replay_lifts(sim, cfg):
    sim.reset(3)
    name = "red_cube"
    before = sim.get_state()
    t_before = sim.time
    waypoints = plan_lift(sim, name, np.random.default_rng(0))
    assert waypoints is not None and all(w.shape == (23,) for w in waypoints)
    np.testing.assert_array_equal(sim.get_state(), before)  # every verification was rolled back
    assert sim.time == t_before
    rest = sim.object_pose(name).position[2]
    monitor = TaskMonitor(TaskGoal("grasp", name, rest), cfg.success)
    execute(sim, waypoints, on_tick=monitor.update)
    assert monitor.trackers["grasp"].success and monitor.trackers["lifted"].success
    assert sim.object_pose(name).position[2] - rest > 0.08


def test_grasp_vs_lifted_and_failing_cases(sim, cfg):
    """Touching but not lifting passes grasp and fails lifted; the hand far away fails both."""
    sim.reset(3)
    name = "red_cube"
    rest = sim.object_pose(name).position[2]
    goal = TaskGoal("grasp", name, rest)
    far = measure(sim, goal, cfg.success)
    assert not far["grasp"] and not far["lifted"] and far["contacts"] == 0
    plan = demonstrator_for(sim, cfg).lift(name, np.random.default_rng(0))
    assert plan is not None
    monitor = TaskMonitor(goal, cfg.success)
    # descend and close, then hold closed on the table (no lift)
    closed = plan.waypoints[plan.grasp_index]
    execute(sim, plan.waypoints[: plan.grasp_index] + [closed] * 16, on_tick=monitor.update)
    assert monitor.trackers["grasp"].success
    assert not monitor.trackers["lifted"].success
    assert monitor.last["object_rise"] < cfg.success.lift_height


def test_place_success_and_failure_on_resting_object(sim, cfg):
    sim.reset(7)
    name = "orange_block"
    pos = sim.object_pose(name).position
    near = TaskGoal("place", name, pos[2], goal_object_position=pos + np.array([0.06, 0.0, 0.0]))
    far = TaskGoal("place", name, pos[2], goal_object_position=pos + np.array([0.0, 0.2, 0.0]))
    assert measure(sim, near, cfg.success)["place"]
    assert not measure(sim, far, cfg.success)["place"]


def test_reach_goal_round_trip_and_errors():
    g = ReachGoal(np.array([0.5, 0.0, 0.2]), 0.3, np.zeros(16))
    back = ReachGoal.from_dict(g.as_dict())
    np.testing.assert_allclose(back.palm_position, g.palm_position)
    with pytest.raises(ValueError, match="'hand' 16"):
        ReachGoal.from_dict({"palm": [0, 0, 0], "yaw": 0.0, "hand": [0.0] * 3})
    with pytest.raises(ValueError, match="missing"):
        ReachGoal.from_dict({"palm": [0, 0, 0]})


def test_grasp_synthesis_lifts_every_shape(sim, cfg):
    """One scene, all six objects (box, cylinder, sphere, capsule, ellipsoid, elongated box): each gets a lift
    verified in simulation, from grasps that differ with the shape (not one hand-tuned pose)."""
    demo = demonstrator_for(sim, cfg)
    chosen = set()
    for name in sim.object_names:
        sim.reset(50)
        plan = demo.lift(name, np.random.default_rng(50))
        assert plan is not None, name
        assert plan.lift >= cfg.grasp.min_lift
        c = plan.candidate
        chosen.add((round(c.depth, 3), c.forward, c.lateral, c.fingers, c.thumb))
    assert len(chosen) >= 3
