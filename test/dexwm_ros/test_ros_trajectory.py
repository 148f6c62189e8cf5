import numpy as np
import pytest

from dexwm_ros.trajectory import (
    CombinedSetpoint,
    HermiteTrajectory,
    min_safe_duration,
    pchip_velocities,
    plan_trajectory,
)

VMAX = np.full(2, 2.0)
LOW, HIGH = np.full(2, -3.0), np.full(2, 3.0)


def _numeric_peak(curve: HermiteTrajectory) -> np.ndarray:
    t = np.linspace(0, curve.duration, 4001)
    q = np.stack([curve(x) for x in t])
    return np.abs(np.diff(q, axis=0) / np.diff(t)[:, None]).max(axis=0)


def test_passes_every_point_at_its_time_and_ends_at_rest():
    times = np.array([1.0, 2.0, 3.0])
    pts = np.array([[0.5, 0.0], [0.2, 0.4], [0.3, -0.2]])
    plan = plan_trajectory(np.zeros(2), np.zeros(2), times, pts, None, VMAX, LOW, HIGH)
    assert plan.time_scale == 1.0
    for t, p in zip(times, pts):
        np.testing.assert_allclose(plan.curve(t), p, atol=1e-12)
    np.testing.assert_allclose(plan.curve(0.0), 0.0)
    np.testing.assert_allclose(plan.curve(10.0), pts[-1])
    np.testing.assert_allclose(plan.curve.velocity(3.0), 0.0)
    assert plan.curve.done(3.0) and not plan.curve.done(2.9)


def test_no_overshoot_between_monotone_points():
    times = np.array([0.5, 1.0, 3.0])
    pts = np.array([[0.1, 0.0], [0.2, 0.0], [1.0, 0.0]])
    curve = plan_trajectory(np.zeros(2), np.zeros(2), times, pts, None, VMAX, LOW, HIGH).curve
    q = np.stack([curve(t) for t in np.linspace(0, 3, 601)])[:, 0]
    assert np.all(np.diff(q) >= -1e-12) and q.max() <= 1.0 + 1e-12


def test_too_fast_request_is_slowed_down_within_speed_limits():
    plan = plan_trajectory(np.zeros(2), np.zeros(2), np.array([0.1]), np.array([[2.0, 0.0]]), None, VMAX, LOW, HIGH)
    assert plan.time_scale > 1.0
    assert np.all(_numeric_peak(plan.curve) <= VMAX + 1e-3)
    assert np.all(plan.curve.peak_speed() <= VMAX + 1e-9)
    np.testing.assert_allclose(plan.curve(plan.curve.duration), [2.0, 0.0])


def test_point_at_time_zero_takes_the_minimum_safe_duration():
    goal = np.array([[1.0, -0.5]])
    plan = plan_trajectory(np.zeros(2), np.zeros(2), np.zeros(1), goal, None, VMAX, LOW, HIGH)
    assert plan.curve.duration == pytest.approx(min_safe_duration(np.zeros(2), goal[0], VMAX))
    assert plan.curve.peak_speed().max() == pytest.approx(2.0, rel=1e-6)  # exactly at the limit, not above


def test_starts_with_the_current_velocity_and_clips_to_limits():
    v0 = np.array([1.0, -0.5])
    plan = plan_trajectory(np.zeros(2), v0, np.array([1.0]), np.array([[5.0, 0.0]]), None, VMAX, LOW, HIGH)
    np.testing.assert_allclose(plan.curve.velocity(0.0), v0)
    assert plan.curve(plan.curve.duration)[0] == pytest.approx(3.0)  # goal clipped to HIGH
    assert max(plan.curve(t)[0] for t in np.linspace(0, plan.curve.duration, 200)) <= 3.0


def test_given_velocities_are_used_at_the_knots():
    vel = np.array([[0.3, 0.0], [0.0, 0.0]])
    plan = plan_trajectory(np.zeros(2), np.zeros(2), np.array([1.0, 2.0]), np.array([[0.5, 0], [0.8, 0]]), vel,
                           VMAX, LOW, HIGH)
    np.testing.assert_allclose(plan.curve.velocity(1.0), [0.3, 0.0], atol=1e-12)


def test_bad_times_and_shapes_are_rejected():
    with pytest.raises(ValueError, match="strictly increasing"):
        plan_trajectory(np.zeros(2), np.zeros(2), np.array([1.0, 1.0]), np.zeros((2, 2)), None, VMAX, LOW, HIGH)
    with pytest.raises(ValueError, match="non-negative"):
        plan_trajectory(np.zeros(2), np.zeros(2), np.array([-1.0]), np.zeros((1, 2)), None, VMAX, LOW, HIGH)
    with pytest.raises(ValueError, match=r"positions: expected shape \(1, 2\)"):
        plan_trajectory(np.zeros(2), np.zeros(2), np.array([1.0]), np.zeros((1, 3)), None, VMAX, LOW, HIGH)


def test_pchip_zero_velocity_at_turning_points():
    v = pchip_velocities(np.array([0.0, 1.0, 2.0, 3.0]), np.array([[0.0], [1.0], [0.0], [-1.0]]))
    assert v[1, 0] == 0.0 and v[2, 0] < 0 and v[0, 0] == v[3, 0] == 0.0


def test_combined_setpoint_runs_arm_and_hand_on_their_own_clocks():
    arm = HermiteTrajectory([0.0, 1.0], [[0.0], [1.0]], [[0.0], [0.0]])
    hand = HermiteTrajectory([0.0, 2.0], [[5.0], [7.0]], [[0.0], [0.0]])
    sp = CombinedSetpoint(origin=10.5, arm=arm, arm_start=10.0, hand=hand, hand_start=10.5)
    np.testing.assert_allclose(sp(0.0), [arm(0.5)[0], 5.0])
    np.testing.assert_allclose(sp(2.0), [1.0, 7.0])
    assert sp.duration == pytest.approx(2.0) and sp.done(2.0) and not sp.done(1.9)
