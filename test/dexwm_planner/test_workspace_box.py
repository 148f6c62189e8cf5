"""One workspace box for the safety layer and the planner: the same bounds and margin, the same sampled joint-space
path, the same points counted outside (numpy reasons, torch cost)."""

import numpy as np
import pytest
import torch

from dexwm_hw.safety.config import load_safety_config
from dexwm_hw.safety.workspace import BoxSpec, WorkspaceBox, excess, joint_path
from dexwm_planner.planners.workspace import PlanWorkspace


@pytest.fixture(scope="module")
def fk():
    from dexwm_model.kinematics.panda_allegro import PandaAllegroFK

    return PandaAllegroFK.default().double()


def test_the_planner_reads_the_safety_layers_box_shrunk_by_its_margin(fk):
    cfg = load_safety_config()
    for margin in (0.0, 0.03):
        spec = BoxSpec.from_safety_config(margin)
        plan = PlanWorkspace.from_safety_config(fk, margin)
        np.testing.assert_array_equal(plan.lower.numpy(), spec.lower)
        np.testing.assert_array_equal(plan.upper.numpy(), spec.upper)
        np.testing.assert_allclose(spec.lower, cfg.point_lower() + margin)
        tips = [i for i, n in enumerate(cfg.workspace_points) if n in cfg.workspace_tip_points]
        assert tips and all(spec.lower[i, 2] == pytest.approx(cfg.workspace_tip_min_z + margin) for i in tips)
        rest = [i for i in range(len(cfg.workspace_points)) if i not in tips]
        assert all(spec.lower[i, 2] == pytest.approx(cfg.workspace_min[2] + margin) for i in rest)
        assert plan.point_names == list(spec.point_names) == list(cfg.workspace_points)
        assert plan.path_samples == spec.path_samples == cfg.workspace_path_samples
    with pytest.raises(ValueError, match="is cost.workspace_margin larger than half the box"):
        PlanWorkspace.from_safety_config(fk, 5.0)
    with pytest.raises(ValueError, match="must be below upper"):
        BoxSpec.from_safety_config(5.0)


def test_numpy_and_torch_sample_the_same_path_and_measure_the_same_excess():
    rng = np.random.default_rng(0)
    start, goal = rng.normal(size=23), rng.normal(size=23)
    path_np = joint_path(start, goal, 5)
    path_t = joint_path(torch.as_tensor(start), torch.as_tensor(goal), 5)
    assert path_np.shape == (5, 23)
    np.testing.assert_array_equal(path_np, path_t.numpy())
    np.testing.assert_allclose(path_np[-1], goal)
    pts = rng.uniform(-1.5, 1.5, size=(7, 3))
    lo, hi = np.array([-1.0, -1.0, 0.0]), np.array([1.0, 1.0, 1.0])
    np.testing.assert_array_equal(excess(pts, lo, hi), excess(torch.as_tensor(pts), torch.as_tensor(lo),
                                                              torch.as_tensor(hi)).numpy())
    assert excess(np.zeros((1, 3)) + 0.5, lo, hi).sum() == 0.0


def test_a_plan_costs_exactly_when_the_safety_layer_gives_a_reason(fk):
    cfg = load_safety_config()
    box = WorkspaceBox.from_fk(fk, cfg.point_lower(), cfg.workspace_max, cfg.workspace_points,
                               cfg.workspace_path_samples)
    plan = PlanWorkspace.from_safety_config(fk, 0.0)
    from dexwm_robot.scene import load_sim_config

    home = np.asarray(load_sim_config()[0].home, dtype=np.float64)
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(12):
        goal = home + rng.normal(scale=0.8, size=23)
        reason = box.check_path(home, goal)
        cost = float(plan.violation(torch.as_tensor(home), torch.as_tensor(goal)[None, None])[0])
        assert (reason is None) == (cost == 0.0), (reason, cost)
        seen.add(reason is None)
    assert seen == {True, False}  # moves inside and moves out of the box were both tried


def test_fingertips_may_touch_the_table_the_wrist_may_not(fk):
    """workspace_tip_min_z: a fingertip site a centimetre below the table top (a grasp pressing the pads on the
    table) passes; the same depth for the wrist is refused, with the bound that applies to it in the reason."""
    from dexwm_hw.safety.config import config_from_values
    from dataclasses import asdict

    cfg = load_safety_config()
    names = list(cfg.workspace_points)
    z = {"allegro/wrist": 0.08, "allegro/palm_center": 0.07}

    def points(qs, low_site):
        out = np.zeros((len(qs), len(names), 3))
        out[..., 0], out[..., 2] = 0.5, 0.03
        for i, n in enumerate(names):
            out[:, i, 2] = z.get(n, 0.03)
        out[:, names.index(low_site), 2] = -0.01
        return out

    for site, refused in (("allegro/ff_tip", False), ("allegro/th_tip", False), ("allegro/wrist", True)):
        box = WorkspaceBox(cfg.point_lower(), cfg.workspace_max, names, lambda q, s=site: points(q, s))
        reason = box.check_path(None, np.zeros(23))
        assert (reason is not None) == refused, reason
        if refused:
            assert f"{site} z = -0.010 m < {cfg.workspace_min[2]:.3f}" in reason
    bad = dict(asdict(cfg), workspace_tip_points=["allegro/pinky_tip"])
    with pytest.raises(Exception, match="not among workspace_points"):
        config_from_values(bad, "test")
