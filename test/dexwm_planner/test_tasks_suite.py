"""The committed suites, deterministic regeneration of episodes (specs and goal images), and the CLIs."""

import json

import numpy as np
import pytest

from dexwm_hw.sim.robot import PandaAllegroSim
from dexwm_robot.scene import load_sim_config
from dexwm_planner.tasks import suite as S
from dexwm_planner.tasks.config import TASKS, load_tasks_config


@pytest.mark.parametrize("task", TASKS)
def test_committed_suite_is_valid(task):
    suite = S.load_suite(task)
    entries = suite["episodes"]
    assert len(entries) >= 50
    assert [e["index"] for e in entries] == list(range(len(entries)))
    assert len({e["seed"] for e in entries}) == len(entries)
    scene, _ = load_sim_config()
    names = [o.name for o in scene.objects]
    for e in entries:
        S.validate_entry(e, task, names)
    assert {e["object"] for e in entries} == set(names)  # every shape is in every suite
    if task == "place":  # goal spots lie in the object region of the table
        for e in entries:
            x, y = e["place_goal"]
            assert scene.object_region_x[0] <= x <= scene.object_region_x[1]
            assert scene.object_region_y[0] <= y <= scene.object_region_y[1]
    creation = suite["creation"]
    assert creation["kept"] == len(entries) and creation["draws"] >= len(entries)


def test_build_is_deterministic_specs_and_goal_images(tmp_path):
    cfg = load_tasks_config()
    builds = []
    for _ in range(2):
        sim = PandaAllegroSim(render=True)  # a fresh simulator each time: no state carried over
        specs = []
        for task in ("reach", "grasp"):
            entries = S.select(S.load_suite(task), [0])
            specs += [s for s, _ in S.build_suite(task, entries, sim, cfg)]
        sim.close()
        builds.append(specs)
    assert S.compare_specs(builds[0], builds[1]) == []
    for spec in builds[0]:
        assert spec.goal_image is not None and spec.goal_image.std() > 10
        assert spec.demo["success"]
    # a build saved to disk loads back identical
    S.save_build("grasp", [builds[0][1]], tmp_path)
    loaded = S.load_build("grasp", tmp_path)
    assert S.compare_specs(loaded, [builds[0][1]]) == []
    # a changed goal is detected
    loaded[0].goal_image = loaded[0].goal_image.copy()
    loaded[0].goal_image[0, 0, 0] ^= 1
    assert any("goal images differ" in d for d in S.compare_specs(loaded, [builds[0][1]]))


def test_suite_errors_are_specific(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"task": "grasp", "format": 1, "episodes": [{"index": 0, "seed": 1, "object": "x"}]}))
    with pytest.raises(ValueError, match='"task": "reach"'):
        S.load_suite("reach", p)
    with pytest.raises(FileNotFoundError, match="suite file not found"):
        S.load_suite("reach", tmp_path / "missing.json")
    with pytest.raises(ValueError, match="task must be one of"):
        S.load_suite("push")
    suite = S.load_suite("reach")
    with pytest.raises(ValueError, match=r"no episode\(s\) \[9999\]"):
        S.select(suite, [9999])
    with pytest.raises(ValueError, match="unknown object"):
        S.validate_entry({"index": 0, "seed": 1, "object": "teapot"}, "grasp", ["red_cube"])
    with pytest.raises(ValueError, match="place_goal"):
        S.validate_entry({"index": 0, "seed": 1, "object": "red_cube"}, "place", ["red_cube"])


def test_demo_cli_prints_outcome(capsys):
    from dexwm_cli.main import main

    rc = main(["demo", "reach", "--episode", "1"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    out = json.loads(line)
    assert rc == 0 and out["success"] and out["task"] == "reach" and out["episode"] == 1
    assert out["held_ticks"] >= 10 and out["final"]["reach_distance"] < 0.15


def test_place_demonstration_puts_the_object_at_its_goal():
    from dexwm_planner.tasks.episodes import run_episode, start_joints

    sim = PandaAllegroSim(render=False)
    (entry,) = S.select(S.load_suite("place"), [0])
    spec, outcome = run_episode(sim, "place", entry, render_goal=False)
    assert outcome["success"] and outcome["held_ticks"] >= 10
    goal_xy = np.asarray(entry["place_goal"])
    assert np.linalg.norm(spec.goal_object_position[:2] - goal_xy) < load_tasks_config().place.accept_distance + 1e-9
    assert sim.hand_contacts(entry["object"]) == 0  # released
    start = start_joints(entry["seed"], sim, load_tasks_config())
    sim.reset(entry["seed"], joints=start)
    moved = np.linalg.norm(sim.object_pose(entry["object"]).position[:2] - spec.goal_object_position[:2])
    assert moved > 0.1  # it really was carried (goal spots are >= 15 cm from the start)
    sim.close()


@pytest.mark.parametrize("grasp_goal", ["closed", "lifted"])
def test_grasp_goal_is_cut_where_the_suite_config_says(grasp_goal):
    """closed: the goal is the hand closed on the object still resting on the table (in contact, grasp test met,
    not lifted); lifted: the demonstration's whole lift (object up, lifted test met)."""
    import dataclasses

    from dexwm_planner.tasks.episodes import run_episode

    cfg = load_tasks_config()
    cfg = dataclasses.replace(cfg, suite=dataclasses.replace(cfg.suite, grasp_goal=grasp_goal))
    sim = PandaAllegroSim(render=False)
    (entry,) = S.select(S.load_suite("grasp"), [0])
    spec, outcome = run_episode(sim, "grasp", entry, cfg, render_goal=False)
    assert outcome["success"] and sim.hand_contacts(entry["object"]) > 0
    rise = float(spec.goal_object_position[2] - spec.rest_height)
    if grasp_goal == "closed":
        assert rise < 0.02
    else:
        assert rise > cfg.grasp.min_lift
    sim.close()


def test_grasp_goal_setting_is_checked():
    import dataclasses

    from dexwm_robot.config import ConfigError

    with pytest.raises(ConfigError, match="grasp_goal must be one of"):
        dataclasses.replace(load_tasks_config().suite, grasp_goal="raised")
