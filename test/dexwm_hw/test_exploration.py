"""Exploratory episode generator: IK, the three episode kinds, recording, resumable parallel generation."""

import dataclasses
import json

import mujoco
import numpy as np
import pytest
import yaml

from dexwm_cli.main import main as dexwm_main
from dexwm_hw.sim import exploration as ex
from dexwm_hw.sim.robot import PandaAllegroSim
from dexwm_robot.config import ConfigError, config_dir
from dexwm_model.data.episode import EpisodeReader, read_episode
from dexwm_planner.tasks import demonstrator
from dexwm_robot.hand_layout import ALLEGRO_TO_HAND21


def short_config(**mix) -> ex.ExplorationConfig:
    """The real parameters with short episodes (few, quick moves) so the tests stay fast."""
    cfg = ex.load_exploration_config()
    return dataclasses.replace(
        cfg, mix=mix or {"reach": 1.0},
        reach=dataclasses.replace(cfg.reach, waypoints=[1, 2], segment_seconds=[0.3, 0.5], settle_seconds=[0.0, 0.1]),
        hand_only=dataclasses.replace(cfg.hand_only, cycles=[1, 1], segment_seconds=[0.3, 0.5],
                                      settle_seconds=[0.0, 0.1]),
        lift_replay=dataclasses.replace(cfg.lift_replay, settle_seconds=0.2),
    )


def short_yaml(tmp_path, mix: dict) -> str:
    data = yaml.safe_load((config_dir() / "data.yaml").read_text())
    e = data["exploration"]
    e["mix"] = mix
    e["reach"].update(waypoints=[1, 2], segment_seconds=[0.3, 0.5], settle_seconds=[0.0, 0.1])
    e["hand_only"].update(cycles=[1, 1], segment_seconds=[0.3, 0.5], settle_seconds=[0.0, 0.1])
    path = tmp_path / "data_short.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="module")
def sim():
    s = PandaAllegroSim()
    yield s
    s.close()


@pytest.fixture(scope="module")
def ik(sim):
    return ex.ArmIK(sim.model, ex.load_exploration_config().ik, sim.scene_cfg.table_height)


def test_ik_reaches_palm_down_target_and_rejects_unreachable(sim, ik):
    sim.reset(0)
    target = np.array([0.55, 0.05, 0.15])
    rot = ex.palm_down_rotation(0.3, 1.0, 0.2)
    q = ik.solve(sim.joints, target, rot, np.random.default_rng(0))
    assert q is not None and np.all(q >= sim.joint_low) and np.all(q <= sim.joint_high)
    np.testing.assert_array_equal(q[7:], sim.joints[7:])  # hand joints untouched
    sim.reset(0, joints=q)  # check with the simulator itself, not the IK's own kinematics
    pos, R = sim.site_pose(ex.IK_SITE)
    assert np.linalg.norm(pos - target) < ik.cfg.position_tolerance
    assert np.linalg.norm(ex._rotation_error(rot, R)) < ik.cfg.orientation_tolerance
    assert R[:, 0] @ np.array([0, 0, -1.0]) > np.cos(0.25)  # palm normal close to straight down
    assert ik.solve(sim.joints, np.array([1.5, 0.0, 0.3]), rot, np.random.default_rng(0)) is None  # out of reach
    assert ik.solve(sim.joints, np.array([0.5, 0.0, 0.0]), rot, np.random.default_rng(0)) is None  # in the table


def test_reach_episode_moves_arm_and_records_consistent_data(sim, ik):
    cfg = short_config(reach=1.0)
    ep = ex.generate_episode(sim, ik, 3, cfg, index=3)
    ep.validate()
    assert ep.meta.episode_kind == "reach" and ep.meta.extra["waypoints_reached"] >= 1
    assert ep.meta.scene_seed == 3 and ep.meta.fps == cfg.record_fps
    every = ex.ticks_per_frame(sim, cfg.record_fps)
    np.testing.assert_allclose(np.diff(ep.timestamps), every * sim.control_dt, atol=1e-9)
    assert np.ptp(ep.joint_positions[:, :7], axis=0).max() > 0.05  # the arm moved
    assert np.abs(ep.frames[-1].astype(int) - ep.frames[0].astype(int)).mean() > 0.5  # and the images show it
    # the commanded target at the end is the last waypoint, which the arm tracks closely
    assert np.abs(ep.joint_positions[-1, :7] - ep.commanded_targets[-1, :7]).max() < 0.02
    # 21-point layout from the sim's keypoint sites (ring duplicated as little)
    np.testing.assert_array_equal(ep.keypoints_world[:, 17:21], ep.keypoints_world[:, 13:17])
    layout = {k: tuple(v) for k, v in ep.meta.object_layout.items()}
    sim.reset(3, object_layout=layout)  # the first frame is the reset state
    np.testing.assert_allclose(ep.keypoints_world[0], sim.keypoints_world()[list(ALLEGRO_TO_HAND21)], atol=1e-12)
    np.testing.assert_allclose(ep.object_poses[0, :, :3], [sim.object_pose(n).position for n in sim.object_names],
                               atol=1e-12)
    assert np.all(ep.keypoints_world[..., 2] > sim.scene_cfg.table_height)  # never through the table


def test_hand_only_episode_keeps_arm_still(sim, ik):
    ep = ex.generate_episode(sim, ik, 4, short_config(hand_only=1.0), index=4)
    ep.validate()
    assert ep.meta.episode_kind == "hand_only" and ep.meta.extra["cycles"] == 1
    assert np.ptp(ep.commanded_targets[:, :7], axis=0).max() == 0.0
    assert np.ptp(ep.joint_positions[:, :7], axis=0).max() < 0.01
    assert np.ptp(ep.joint_positions[:, 8:11], axis=0).max() > 0.3  # index finger flexion opened / closed


def test_lift_replay_adds_noise_to_demonstrated_waypoints(sim, ik):
    # the scripted demonstrator is another layer's, passed in; here a stand-in plan exercises the replay machinery
    calls = []

    def plan_lift(s, name, rng):
        assert s is sim and isinstance(rng, np.random.Generator)
        calls.append(name)
        if len(calls) == 1:
            return None  # first object "fails": the generator must ask for another one
        home = s.scene_cfg.home
        lowered = home.copy()
        lowered[[1, 3]] += [0.25, 0.2]
        closed = lowered.copy()
        closed[7:] = s.joint_high[7:] * 0.6
        return [lowered, closed, home]

    cfg = short_config(lift_replay=1.0)
    ep = ex.generate_episode(sim, ik, 5, cfg, index=5, plan_lift=plan_lift)
    ep.validate()
    assert ep.meta.episode_kind == "lift_replay" and len(calls) == 2
    assert ep.meta.extra["object"] == calls[1] and ep.meta.extra["waypoints"] == 3
    targets = np.unique(ep.commanded_targets, axis=0)
    assert len(targets) == 4  # the start pose plus three noisy waypoints
    final = ep.commanded_targets[-1]
    dev = final - sim.clip(sim.scene_cfg.home)
    assert 0 < np.abs(dev[:7]).max() < 5 * cfg.lift_replay.arm_noise_std  # noisy, but close to the plan
    assert np.abs(dev[7:]).max() > 0

    ep = ex.generate_episode(sim, ik, 6, cfg, index=6, plan_lift=lambda s, n, r: None)
    assert ep.meta.episode_kind == "reach" and ep.meta.extra["fallback_from"] == "lift_replay"


def test_lift_replay_with_the_real_demonstrator(sim, ik):
    ep = ex.generate_episode(sim, ik, 2, short_config(lift_replay=1.0), index=2,
                             plan_lift=demonstrator.plan_lift)
    ep.validate()
    if ep.meta.episode_kind == "lift_replay":
        assert ep.meta.extra["object"] in sim.object_names and ep.meta.extra["waypoints"] > 0
        assert len(np.unique(ep.commanded_targets, axis=0)) > 2
    else:  # the demonstrator found no lift for the objects tried: a reach episode stands in
        assert ep.meta.episode_kind == "reach" and ep.meta.extra["fallback_from"] == "lift_replay"


def test_diverging_physics_is_detected_and_the_motion_redrawn(sim, ik, monkeypatch):
    cfg = short_config(reach=1.0)
    clean = ex.generate_episode(sim, ik, 21, cfg)
    assert clean.meta.extra["unstable_retries"] == 0
    real_step = sim.step
    state = {"resets": 0, "fail_resets": {1}}

    real_reset = sim.reset

    def reset(*a, **kw):
        state["resets"] += 1
        real_reset(*a, **kw)

    def step():  # MuJoCo's own report of a diverging step (it then resets the state), in chosen attempts
        real_step()
        if state["resets"] in state["fail_resets"] and sim.time > 0.3:
            sim.data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number += 1

    monkeypatch.setattr(sim, "step", step)
    monkeypatch.setattr(sim, "reset", reset)
    ep = ex.generate_episode(sim, ik, 21, cfg)
    ep.validate()
    assert ep.meta.extra["unstable_retries"] == 1 and "diverged" in ep.meta.extra["unstable_attempts"][0]
    assert ep.meta.object_layout == clean.meta.object_layout and ep.meta.episode_kind == clean.meta.episode_kind
    assert not np.array_equal(ep.commanded_targets[-1], clean.commanded_targets[-1])  # a new motion
    state.update(resets=0, fail_resets=set(range(1, 10)))
    with pytest.raises(ex.SimulationUnstable, match=r"seed 21 \(reach\): the simulation diverged in all 4 attempts"):
        ex.generate_episode(sim, ik, 21, cfg)


def test_same_seed_gives_identical_episode(sim, ik):
    cfg = short_config(reach=0.5, hand_only=0.5)
    a = ex.generate_episode(sim, ik, 11, cfg)
    ex.generate_episode(sim, ik, 12, cfg)  # a different episode in between must not leak state
    b = ex.generate_episode(sim, ik, 11, cfg)
    for name in ("joint_positions", "commanded_targets", "object_poses", "keypoints_world", "frames", "timestamps"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    c = ex.generate_episode(sim, ik, 13, cfg)
    assert c.num_frames != a.num_frames or not np.array_equal(c.joint_positions, a.joint_positions)


def test_cli_generation_validates_reprojects_and_resumes(tmp_path, capsys):
    out = tmp_path / "eps"
    config = short_yaml(tmp_path, {"reach": 0.5, "hand_only": 0.5})
    assert dexwm_main(["data", "sim", "--episodes", "2", "--out", str(out), "--workers", "1", "--seed", "100",
                       "--config", config, "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["generated"] == 2 and summary["frames"] > 0 and summary["frames_per_s"] > 0
    files = sorted(out.glob("*.h5"))
    assert [f.name for f in files] == ["episode_000000.h5", "episode_000001.h5"]
    for i, f in enumerate(files):
        with EpisodeReader(f, deep=True) as r:
            assert r.meta.scene_seed == 100 + i and r.meta.extra["episode_index"] == i
            K, kc, kp = r.camera_intrinsics, r.keypoints_camera, r.keypoints_pixels
            assert np.all(kc[..., 2] > 0)  # the hand stays in front of the camera
            u = K[0, 0] * kc[..., 0] / kc[..., 2] + K[0, 2]
            v = K[1, 1] * kc[..., 1] / kc[..., 2] + K[1, 2]
            np.testing.assert_allclose(kp, np.stack([u, v], -1), atol=1e-6)
            # the camera frame is the one of the rendered image: the world-to-camera map is the pose's inverse
            Twc = r.camera_pose_world[0]
            np.testing.assert_allclose(Twc[:3, :3].T @ (r.keypoints_world[0, 0] - Twc[:3, 3]), kc[0, 0], atol=1e-9)
            assert r.frame(0).shape == (224, 224, 3)
    assert dexwm_main(["data", "check", str(out)]) == 0
    capsys.readouterr()

    # resume: a crash left a .tmp without a final file, and one final file got corrupted
    original = read_episode(files[1])
    (out / "episode_000002.h5.tmp").write_bytes(files[0].read_bytes()[:5000])
    files[1].write_bytes(b"\0" * 100)
    mtime0 = files[0].stat().st_mtime_ns
    assert dexwm_main(["data", "sim", "--episodes", "3", "--out", str(out), "--seed", "100", "--config", config,
                       "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kept_valid"] == 1 and summary["generated"] == 2
    assert summary["regenerated_invalid"] == ["episode_000001.h5"]
    assert summary["stale_tmp_removed"] == ["episode_000002.h5.tmp"]
    assert sorted(p.name for p in out.iterdir()) == [f"episode_00000{i}.h5" for i in range(3)]
    assert files[0].stat().st_mtime_ns == mtime0  # the valid episode was left alone
    again = read_episode(files[1])  # regenerated from the same seed: the same episode
    np.testing.assert_array_equal(again.joint_positions, original.joint_positions)
    np.testing.assert_array_equal(again.frames, original.frames)

    # resuming into the folder with another seed would mix two data sets: refused, nothing touched
    assert dexwm_main(["data", "sim", "--episodes", "3", "--out", str(out), "--seed", "7", "--config", config,
                       "--no-progress"]) == 2
    assert "was generated with seed 100 but this run gives episode 0 the seed 7" in capsys.readouterr().err
    assert files[0].stat().st_mtime_ns == mtime0


def test_cli_hands_the_planners_demonstrator_to_the_generator(tmp_path, capsys, monkeypatch):
    # the generator (dexwm_hw) cannot import the demonstrator (dexwm_planner, a layer up): `dexwm data sim` passes it
    calls = []

    def plan_lift(s, name, rng):
        calls.append(name)
        return None  # no lift for any object: the episode falls back to reach

    monkeypatch.setattr(demonstrator, "plan_lift", plan_lift)
    out = tmp_path / "lift"
    assert dexwm_main(["data", "sim", "--episodes", "1", "--out", str(out), "--seed", "3", "--config",
                       short_yaml(tmp_path, {"lift_replay": 1.0}), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["generated"] == 1
    assert calls and len(set(calls)) == len(calls)  # each object asked once, the answer kept across retries
    with EpisodeReader(out / "episode_000000.h5") as r:
        assert r.meta.episode_kind == "reach" and r.meta.extra["fallback_from"] == "lift_replay"


def test_output_does_not_depend_on_worker_count(tmp_path):
    cfg = short_config(reach=0.5, hand_only=0.5)
    one = ex.generate(tmp_path / "w1", 2, workers=1, seed=200, cfg=cfg, progress=False)
    two = ex.generate(tmp_path / "w2", 2, workers=2, seed=200, cfg=cfg, progress=False)
    assert one["generated"] == two["generated"] == 2 and one["frames"] == two["frames"]
    for name in ("episode_000000.h5", "episode_000001.h5"):
        a, b = read_episode(tmp_path / "w1" / name), read_episode(tmp_path / "w2" / name)
        np.testing.assert_array_equal(a.joint_positions, b.joint_positions)
        np.testing.assert_array_equal(a.commanded_targets, b.commanded_targets)
        np.testing.assert_array_equal(a.object_poses, b.object_poses)


def test_config_errors_are_specific(sim, ik, tmp_path):
    with pytest.raises(ConfigError, match=r"exploration.mix: unknown episode kind\(s\) \['dance'\]"):
        dataclasses.replace(short_config(), mix={"dance": 1.0})
    with pytest.raises(ConfigError, match="shares must be >= 0 with a positive sum"):
        dataclasses.replace(short_config(), mix={"reach": 0.0})
    with pytest.raises(ConfigError, match=r"record_fps = 3.0 Hz must divide the controller rate 20.0 Hz"):
        ex.ticks_per_frame(sim, 3.0)

    with pytest.raises(ex.DemonstratorUnavailable, match=r"needs the scripted demonstrator .* set that share to 0"):
        ex.generate(tmp_path / "never", 1, cfg=short_config(lift_replay=1.0), progress=False)  # no plan_lift given
    with pytest.raises(ex.DemonstratorUnavailable, match=r"needs the scripted demonstrator .* set that share to 0"):
        ex.generate_episode(sim, ik, 2, short_config(lift_replay=1.0))
