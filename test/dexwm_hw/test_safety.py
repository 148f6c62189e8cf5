"""The safety layer's core logic without ROS: limits, velocity stretching, workspace box (real FK), the supervisor's
watchdog / stale-waypoint / e-stop state machine (time is passed in explicitly)."""

import math

import numpy as np
import pytest

from dexwm_robot.joint_names import ALL_JOINT_NAMES
from dexwm_hw.safety.config import SafetyConfig, config_from_values, load_safety_config
from dexwm_hw.safety.limits import JointLimits
from dexwm_hw.safety.motion import MIN_JERK_PEAK_FACTOR, QuinticMove, min_jerk_duration
from dexwm_hw.safety.supervisor import (
    CAMERA_TIMEOUT,
    CONTROLLER_TIMEOUT,
    ESTOP,
    READY,
    STALE_WAYPOINTS,
    WAITING,
    SafetySupervisor,
)
from dexwm_hw.safety.workspace import WorkspaceBox
from dexwm_robot.scene import load_sim_config
from dexwm_robot.config import ConfigError

CFG = load_safety_config()
HOME = np.asarray(load_sim_config()[0].home, dtype=np.float64)
NAMES = list(ALL_JOINT_NAMES)


def limits() -> JointLimits:
    return JointLimits(ALL_JOINT_NAMES, CFG.joint_position_lower, CFG.joint_position_upper, CFG.joint_velocity_limit,
                       CFG.position_tolerance, CFG.min_move_duration)


# ------------------------------------------------------------------------------------------------------ motion
def test_quintic_move_meets_its_boundary_conditions_and_continues_a_running_move():
    start, goal = np.array([0.0, 1.0]), np.array([0.4, 0.7])
    move = QuinticMove(start, goal, 2.0)
    np.testing.assert_allclose(move.position(0.0), start)
    np.testing.assert_allclose(move.position(2.0), goal)
    np.testing.assert_allclose(move.position(1.0), (start + goal) / 2)  # symmetric from rest
    np.testing.assert_allclose(move.velocity(1.999999), 0.0, atol=1e-5)
    # from rest the peak speed is 1.875 |d| / T, which min_jerk_duration inverts
    np.testing.assert_allclose(move.peak_speed(257), MIN_JERK_PEAK_FACTOR * np.abs(goal - start) / 2.0, rtol=1e-4)
    vmax = np.array([0.5, 0.1])
    T = min_jerk_duration(start, goal, vmax)
    assert np.max(QuinticMove(start, goal, T).peak_speed(257) / vmax) == pytest.approx(1.0, abs=1e-4)
    # taking over with velocity and acceleration: no jump in either
    v0, a0 = np.array([0.3, -0.2]), np.array([1.0, 0.5])
    follow = QuinticMove(start, goal, 1.5, v0, a0)
    eps = 1e-6
    np.testing.assert_allclose((follow.position(eps) - start) / eps, v0, atol=1e-4)
    np.testing.assert_allclose(follow.acceleration(0.0), a0)
    np.testing.assert_allclose((follow.velocity(eps) - follow.velocity(0.0)) / eps, a0, atol=1e-3)
    np.testing.assert_allclose(follow.acceleration(1.5 - 1e-9), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="start_velocity: expected shape"):
        QuinticMove(start, goal, 1.0, np.zeros(3))


# ------------------------------------------------------------------------------------------------------ limits
def test_position_limits_clip_within_tolerance_and_reject_beyond_it():
    lim = limits()
    ok = lim.check_positions(HOME)
    assert ok.rejection is None and ok.clipped == [] and np.array_equal(ok.target, HOME)

    near = HOME.copy()
    near[3] = lim.upper[3] + 0.5 * lim.tolerance  # panda_joint4 just above its upper limit
    near[19] = lim.lower[19] - 0.5 * lim.tolerance  # ah_joint00 (thumb) just below its lower limit
    clipped = lim.check_positions(near)
    assert clipped.rejection is None and clipped.clipped == ["panda_joint4", "ah_joint00"]
    assert clipped.target[3] == lim.upper[3] and clipped.target[19] == lim.lower[19]

    far = HOME.copy()
    far[3] = lim.upper[3] + 0.3
    far[8] = lim.lower[8] - 0.2
    bad = lim.check_positions(far)
    assert bad.rejection is not None
    assert "panda_joint4" in bad.rejection and "above its upper limit" in bad.rejection
    assert "ah_joint11" in bad.rejection and "below its lower limit" in bad.rejection
    nan = HOME.copy()
    nan[5] = np.nan
    assert "non-finite position for panda_joint6" in lim.check_positions(nan).rejection


def test_durations_are_stretched_to_the_velocity_limits():
    lim = limits()
    goal = HOME.copy()
    goal[0] += 0.6  # 0.6 rad on joint 1 at 1.5 rad/s needs 0.75 s with a minimum-jerk profile
    duration, stretched = lim.safe_duration(HOME, goal, 0.2)
    assert stretched and duration == pytest.approx(MIN_JERK_PEAK_FACTOR * 0.6 / CFG.joint_velocity_limit[0])
    assert lim.safe_duration(HOME, goal, 2.0) == (2.0, False)
    assert lim.safe_duration(HOME, HOME, 0.0) == (CFG.min_move_duration, True)  # the floor


# --------------------------------------------------------------------------------------------------- workspace
@pytest.fixture(scope="module")
def fk_box() -> WorkspaceBox:
    from dexwm_model.kinematics.panda_allegro import PandaAllegroFK

    return WorkspaceBox.from_fk(PandaAllegroFK.default(), CFG.workspace_min, CFG.workspace_max, CFG.workspace_points,
                                CFG.workspace_path_samples)


def test_workspace_box_with_forward_kinematics(fk_box):
    assert fk_box.check_path(HOME, HOME) is None
    down = HOME.copy()
    down[1], down[3] = 1.2, -1.0  # shoulder forward, elbow open: the hand goes through the table
    assert fk_box.points_fn(down[None])[0, :, 2].min() < CFG.workspace_min[2]  # precondition, by FK
    reason = fk_box.check_path(HOME, down)
    assert reason is not None and reason.startswith("workspace bounds:")
    assert " z = " in reason and f"< {CFG.workspace_min[2]:.3f}" in reason
    assert any(site in reason for site in CFG.workspace_points)


def test_workspace_path_check_catches_a_path_that_leaves_the_box_between_inside_endpoints():
    # a curved map from one joint to a point: x = cos(q0) exceeds 0.9 near q0 = 0 only
    def points(q):
        return np.stack([np.cos(q[:, 0]), np.sin(q[:, 0]), np.full(len(q), 0.5)], axis=1)[:, None, :]

    box = WorkspaceBox([-1.0, -1.0, 0.0], [0.9, 1.0, 1.0], ["p"], points, path_samples=8)
    start, goal = np.array([-1.0]), np.array([1.0])
    reason = box.check_path(start, goal)
    assert reason is not None and "along the path" in reason and "p x = " in reason
    assert WorkspaceBox([-1.0, -1.0, 0.0], [0.9, 1.0, 1.0], ["p"], points, path_samples=1).check_path(start, goal) \
        is None  # the target alone is inside


def test_unknown_workspace_site_is_a_clear_error():
    from dexwm_model.kinematics.panda_allegro import PandaAllegroFK

    with pytest.raises(ValueError, match=r"unknown FK site\(s\) \['allegro/pinky_tip'\]"):
        WorkspaceBox.from_fk(PandaAllegroFK.default(), CFG.workspace_min, CFG.workspace_max, ["allegro/pinky_tip"])


# ---------------------------------------------------------------------------------------------------- supervisor
def supervisor(workspace=None, **overrides) -> SafetySupervisor:
    kw = dict(joint_states_timeout=0.5, image_timeout=1.0, waypoint_timeout=1.0, max_waypoint_age=1.0,
              hold_duration=0.15)
    kw.update(overrides)
    return SafetySupervisor(ALL_JOINT_NAMES, limits(), workspace, **kw)


def ready(sup: SafetySupervisor, now: float, q=HOME) -> None:
    sup.on_joint_state(NAMES, list(q), now)
    sup.on_image(now)
    sup.tick(now)


def test_waits_for_joint_states_and_camera_then_accepts():
    sup = supervisor()
    assert sup.tick(0.0) is None and sup.state == WAITING
    d = sup.on_waypoint(NAMES, list(HOME), 1.0, None, 0.0)
    assert not d.accepted and "no joint state received yet" in d.reason
    sup.on_joint_state(NAMES[:7], list(HOME[:7]), 0.1)  # the arm's driver only
    sup.tick(0.1)
    assert sup.state == WAITING and "ah_joint00" in sup.status(0.1)["reason"]
    sup.on_joint_state(NAMES[7:], list(HOME[7:]), 0.1)  # then the hand's
    sup.tick(0.1)
    assert sup.state == WAITING and sup.status(0.1)["reason"] == "no camera image received yet"
    sup.on_image(0.2)
    sup.tick(0.2)
    assert sup.state == READY and sup.accepting
    target = HOME.copy()
    target[[0, 7]] += [0.6, 0.1]
    d = sup.on_waypoint(NAMES[::-1], list(target[::-1]), 0.1, 0.15, 0.2)  # any order of the names
    assert d.accepted and d.command is not None and not d.command.hold
    np.testing.assert_allclose(d.command.positions, target)
    assert d.command.duration == pytest.approx(MIN_JERK_PEAK_FACTOR * 0.6 / CFG.joint_velocity_limit[0])
    assert "duration stretched" in d.reason
    status = sup.status(0.3)
    assert status["counts"]["accepted"] == 1 and status["counts"]["stretched"] == 1 and status["moving"]


def test_rejections_name_the_problem_and_send_nothing():
    sup = supervisor()
    ready(sup, 0.0)
    far = HOME.copy()
    far[3] = 0.5
    d = sup.on_waypoint(NAMES, list(far), 1.0, None, 0.0)
    assert not d.accepted and d.command is None and "panda_joint4 = 0.5000 rad" in d.reason
    d = sup.on_waypoint(NAMES[:22], list(HOME[:22]), 1.0, None, 0.0)
    assert not d.accepted and "missing joint(s) ['ah_joint03']" in d.reason
    d = sup.on_waypoint(NAMES[:22] + ["ah_joint34"], list(HOME), 1.0, None, 0.0)
    assert "unknown joint(s) ['ah_joint34']" in d.reason
    d = sup.on_waypoint(NAMES, list(HOME), -1.0, None, 0.0)
    assert "time_from_start must be a finite number >= 0" in d.reason
    status = sup.status(0.0)
    assert status["counts"]["rejected"] == 4 and "time_from_start" in status["last_rejection"]["reason"]
    assert status["state"] == READY  # rejections alone do not stop the robot


def test_workspace_rejection_through_the_supervisor(fk_box):
    sup = supervisor(fk_box)
    ready(sup, 0.0)
    down = HOME.copy()
    down[1], down[3] = 1.2, -1.0
    d = sup.on_waypoint(NAMES, list(down), 2.0, None, 0.0)
    assert not d.accepted and d.command is None and d.reason.startswith("workspace bounds:")


def test_controller_timeout_holds_once_refuses_and_recovers_with_fresh_joint_states():
    sup = supervisor()
    moved = HOME.copy()
    moved[0] += 0.2
    ready(sup, 0.0, moved)
    assert sup.on_waypoint(NAMES, list(HOME), 1.0, None, 0.0).accepted
    sup.on_image(0.5)
    assert sup.tick(0.5) is None  # 0.5 s old: not yet stale
    hold = sup.tick(0.6)
    assert sup.state == CONTROLLER_TIMEOUT and hold is not None and hold.hold
    np.testing.assert_allclose(hold.positions, moved)  # the last measured position
    assert hold.duration == 0.15 and "/joint_states silent" in hold.reason
    assert sup.tick(0.7) is None  # a hold is sent once, on entering the state
    d = sup.on_waypoint(NAMES, list(HOME), 1.0, None, 0.7)
    assert not d.accepted and "refused: /joint_states silent" in d.reason
    sup.on_joint_state(NAMES, list(moved), 0.8)
    assert sup.tick(0.8) is None and sup.state == READY  # fresh data: accepting again, nothing sent
    assert sup.on_waypoint(NAMES, list(HOME), 1.0, None, 0.8).accepted


def test_partial_silence_names_the_silent_joints():
    sup = supervisor(image_timeout=0.0)
    ready(sup, 0.0)
    sup.on_joint_state(NAMES[:7], list(HOME[:7]), 0.6)  # the arm keeps reporting, the hand went quiet
    hold = sup.tick(0.6)
    assert sup.state == CONTROLLER_TIMEOUT and hold is not None
    assert "ah_joint00" in hold.reason and "panda_joint1" not in hold.reason


def test_camera_timeout_holds_until_images_return():
    sup = supervisor()
    ready(sup, 0.0)
    sup.on_joint_state(NAMES, list(HOME), 1.05)
    hold = sup.tick(1.05)
    assert sup.state == CAMERA_TIMEOUT and hold is not None and "no camera image for 1.05 s" in hold.reason
    assert not sup.on_waypoint(NAMES, list(HOME), 1.0, None, 1.05).accepted
    sup.on_image(1.1)
    sup.tick(1.1)
    assert sup.state == READY


def test_stale_waypoint_holds_and_a_fresh_one_resumes():
    sup = supervisor()
    ready(sup, 10.0)
    target = HOME.copy()
    target[0] += 0.5
    assert sup.on_waypoint(NAMES, list(target), 2.0, 9.95, 10.0).accepted
    d = sup.on_waypoint(NAMES, list(target), 2.0, 8.0, 10.2)  # stamped 2.2 s ago
    assert not d.accepted and "stale waypoint: stamped 2.20 s ago" in d.reason
    assert d.command is not None and d.command.hold and sup.state == STALE_WAYPOINTS and sup.accepting
    d = sup.on_waypoint(NAMES, list(target), 2.0, 20.0, 10.3)  # a clock 9.7 s ahead
    assert not d.accepted and "in the future" in d.reason and d.command is None  # already holding
    sup.on_joint_state(NAMES, list(HOME), 10.3)
    sup.on_image(10.3)
    assert sup.on_waypoint(NAMES, list(target), 2.0, 10.3, 10.3).accepted and sup.state == READY


def test_dead_mans_switch_on_the_waypoint_stream():
    sup = supervisor(image_timeout=0.0)
    ready(sup, 0.0)
    target = HOME.copy()
    target[0] += 0.5
    assert sup.on_waypoint(NAMES, list(target), 3.0, None, 0.0).accepted
    for t in (0.3, 0.6, 0.9):
        sup.on_joint_state(NAMES, list(HOME), t)
        assert sup.tick(t) is None
    sup.on_joint_state(NAMES, list(HOME), 1.1)
    hold = sup.tick(1.1)  # 1.1 s without a waypoint while the 3 s move runs
    assert hold is not None and sup.state == STALE_WAYPOINTS and "waypoint stream silent" in hold.reason
    # a move that ends before the timeout needs no hold: the stream may end with the plan
    sup2 = supervisor(image_timeout=0.0)
    ready(sup2, 0.0)
    assert sup2.on_waypoint(NAMES, list(target), 0.5, None, 0.0).accepted
    sup2.on_joint_state(NAMES, list(target), 2.0)
    assert sup2.tick(2.0) is None and sup2.state == READY


def test_estop_latches_refuses_and_release_needs_a_live_controller():
    sup = supervisor(image_timeout=0.0)
    ready(sup, 0.0)
    message, hold = sup.engage_estop("operator pressed stop", 0.1)
    assert sup.state == ESTOP and hold is not None and hold.hold and "operator pressed stop" in message
    d = sup.on_waypoint(NAMES, list(HOME), 1.0, None, 0.2)
    assert not d.accepted and d.reason == "refused: e-stop engaged: operator pressed stop"
    # the robot's state stream stops meanwhile: the stop stays latched (ESTOP outranks the timeout)
    sup.tick(1.0)
    assert sup.state == ESTOP
    accepted, message = sup.release_estop("all clear", 1.0)
    assert not accepted and "release refused: /joint_states silent" in message and sup.estop_engaged
    sup.on_joint_state(NAMES, list(HOME), 1.1)
    accepted, message = sup.release_estop("all clear", 1.1)
    assert accepted and not sup.estop_engaged and sup.state == READY and "all clear" in message
    assert sup.on_waypoint(NAMES, list(HOME), 1.0, None, 1.2).accepted
    assert sup.status(1.2)["counts"]["holds"] == 1


# ------------------------------------------------------------------------------------------------------- config
def test_config_loads_and_bad_values_fail_clearly():
    values = {f: getattr(CFG, f) for f in SafetyConfig.__dataclass_fields__}
    assert config_from_values(values, "test") == CFG
    assert len(CFG.joint_position_lower) == 23 and math.isclose(CFG.joint_position_upper[3], -0.0898)
    short = dict(values, joint_velocity_limit=[1.0] * 22)
    with pytest.raises(ConfigError, match="joint_velocity_limit needs 23 values .* got 22"):
        config_from_values(short, "test")
    swapped = dict(values, workspace_min=[0.9, 0.6, 1.0], workspace_max=[0.1, -0.6, 0.005])
    with pytest.raises(ConfigError, match="workspace_min .* must be below workspace_max"):
        config_from_values(swapped, "test")
    inverted = dict(values, joint_position_lower=list(CFG.joint_position_upper))
    with pytest.raises(ConfigError, match="joint_position_lower must be below joint_position_upper"):
        config_from_values(inverted, "test")
