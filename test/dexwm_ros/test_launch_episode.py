"""A simulated run of a suite episode: the episode file, what the graph gives the simulator and the planner from
it, when the starters write one, and the outcome line `dexwm launch` prints from the planner's result file."""

import json

import numpy as np
import pytest

from dexwm_ros.launch_graph import describe
from dexwm_ros.launch_graph.cli import task_outcome
from dexwm_ros.launch_graph.episode import wants_suite_episode, with_suite_episode
from dexwm_planner.tasks.episode_file import EPISODE_FILE_FORMAT, EpisodeFileError, read_episode_file, \
    write_episode_files
from dexwm_planner.tasks.suite import load_suite


@pytest.fixture(scope="module")
def reach_episode(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reach_ep1")
    json_path, image_path = write_episode_files("reach", 1, folder)
    return json_path, image_path


def _by_name(graph):
    return {n.name: n for n in graph.nodes + [m.node for m in graph.missing]}


def test_episode_file_holds_the_suite_episode_and_its_goal_image(reach_episode):
    from PIL import Image

    json_path, image_path = reach_episode
    ep = read_episode_file(json_path)
    entry = next(e for e in load_suite("reach")["episodes"] if e["index"] == 1)
    assert ep["task"] == "reach" and ep["index"] == 1 and ep["seed"] == entry["seed"]
    assert ep["start_joints"].shape == (23,) and ep["goal_keypoints"].shape == (5, 3)
    assert ep["goal_image"] == image_path.resolve()
    with Image.open(image_path) as im:
        assert im.size[0] > 0 and im.mode == "RGB"
    # regenerating gives the same episode (the suite is deterministic)
    again = read_episode_file(write_episode_files("reach", 1, json_path.parent / "again")[0])
    np.testing.assert_array_equal(again["start_joints"], ep["start_joints"])
    np.testing.assert_array_equal(again["goal_keypoints"], ep["goal_keypoints"])


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format="something/2"), "expected format 'dexwm-episode-goal/1'"),
    (lambda d: d.pop("start_joints"), "missing key 'start_joints'"),
    (lambda d: d.update(start_joints=[0.0] * 22), "start_joints must be (23,) finite numbers"),
    (lambda d: d.update(seed=-3), "seed must be an integer"),
    (lambda d: d.update(task="pour"), "task must be reach, grasp or place"),
])
def test_damaged_episode_files_are_refused_with_the_reason(tmp_path, reach_episode, change, message):
    data = json.loads(reach_episode[0].read_text())
    change(data)
    bad = tmp_path / "episode.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(EpisodeFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_episode_file(bad)
    (tmp_path / "garbage.json").write_text("{not json")
    with pytest.raises(EpisodeFileError, match="not readable JSON"):
        read_episode_file(tmp_path / "garbage.json")


def test_graph_starts_the_simulator_and_the_planner_from_the_episode(reach_episode):
    json_path, _ = reach_episode
    ep = read_episode_file(json_path)
    graph = describe("reach", "sim", checkpoint="ckpt", episode_file=str(json_path), seed=7)
    nodes = _by_name(graph)
    sim = nodes["dexwm_sim"].parameters[-1]
    assert sim["seed"] == ep["seed"] and np.allclose(sim["start_joints"], ep["start_joints"])
    planner = nodes["dexwm_planner"].parameters[-1]
    assert planner["task"] == "reach" and planner["episode_file"] == str(json_path) and planner["seed"] == 7
    assert planner["result_file"] == str(json_path.parent / "result.json")
    assert planner["recording_dir"] == str(json_path.parent)
    with pytest.raises(ValueError, match="is a reach episode, not grasp"):
        describe("grasp", "sim", checkpoint="ckpt", episode_file=str(json_path))
    with pytest.raises(ValueError, match="simulator only"):
        describe("reach", "real", checkpoint="ckpt", episode_file=str(json_path))


def test_a_simulated_run_with_a_checkpoint_and_no_goal_gets_a_suite_episode(tmp_path):
    assert wants_suite_episode("sim", {"checkpoint": "c"})
    assert not wants_suite_episode("sim", {"checkpoint": ""})  # no planner: nothing to run
    assert not wants_suite_episode("sim", {"checkpoint": "c", "goal_image": "g.png"})
    assert not wants_suite_episode("sim", {"checkpoint": "c", "serve": True})
    assert not wants_suite_episode("real", {"checkpoint": "c"})
    said = []
    values = with_suite_episode("reach", "sim", {"checkpoint": "c", "episode": 2}, runs_dir=tmp_path, say=said.append)
    ep = read_episode_file(values["episode_file"])
    assert ep["index"] == 2 and ep["task"] == "reach" and "reach suite episode 2" in said[0]
    assert with_suite_episode("reach", "sim", {"checkpoint": ""}, runs_dir=tmp_path) == {"checkpoint": ""}


def test_outcome_line_reports_the_result_file(tmp_path):
    result = tmp_path / "result.json"
    assert "ended without a result" in task_outcome(result, "reach")
    result.write_text(json.dumps({"task": "reach", "success": False, "reason": "TIMEOUT", "message": "max_steps",
                                  "steps": 40, "duration_s": 61.2,
                                  "metrics": {"keypoint_distance_m": 0.21, "loop_rate_hz": 0.7, "replans": 40}}))
    line = task_outcome(result, "reach")
    assert line.startswith("task outcome: reach FAILED (TIMEOUT) after 40 steps in 61.2 s")
    assert "keypoint_distance_m 0.210" in line and "replans" not in line and str(result) in line
    result.write_text("{")
    assert "unreadable result file" in task_outcome(result, "reach")
    assert EPISODE_FILE_FORMAT == "dexwm-episode-goal/1"
