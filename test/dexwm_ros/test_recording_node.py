"""The planner node's parameter ``recording_dir``: one rerun recording per RunTask goal (the simulated robot graph
of test_planner_node, in its own DDS domain, with the planner node started with ``recording_dir``)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("dexwm_interfaces.action")

import test_planner_node as graph_module  # noqa: E402
from test_planner_node import graph  # noqa: E402,F401  (the fixture, built on this module's checkpoint below)
from test_recording import column, read_rrd, rows, texts  # noqa: E402

DOMAIN_ID = 197  # its own DDS domain: other test modules' nodes are invisible


@pytest.fixture(scope="module")
def recording_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("node_recordings")


@pytest.fixture(scope="module")
def recording_launch(recording_dir):
    """test_planner_node's launcher in this module's domain, starting the planner node with ``recording_dir``;
    restored when this module ends."""
    launch = graph_module._launch

    def launch_recording(script, params, log_dir, *overrides, **kwargs):
        if script == "dexwm_planner_node":
            overrides = (*overrides, f"recording_dir:={recording_dir}")
        return launch(script, params, log_dir, *overrides, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(graph_module, "DOMAIN_ID", DOMAIN_ID)
        mp.setattr(graph_module, "_launch", launch_recording)
        yield


@pytest.fixture(scope="module")
def checkpoint(recording_launch, tmp_path_factory):
    return graph_module.tiny_checkpoint(tmp_path_factory.mktemp("node_model") / "model")


def test_each_goal_is_recorded(graph, recording_dir):
    graph.reset_home()
    result = graph.send(graph_module.reach(2, graph_module.goal_image(1))).result()
    assert result.steps == 2, result.message
    files = sorted(recording_dir.glob("reach_*.rrd"))
    assert len(files) == 1, files
    data = read_rrd(files[0])
    assert rows(data["/camera/image"]) == rows(data["/costs/best_plan"]) == 2
    assert rows(data["/camera/keypoints/actual"]) == 2 and rows(data["/goal/image"]) == 1
    arm = [v for v in column(data["/joints/arm"], "Scalars:scalars") if v is not None]
    assert len(arm) == 2 and all(len(v) == 7 and np.isfinite(v).all() for v in arm)
    assert any(n.startswith("RunTask reach ended: ") for n in texts(data["/log"]))
