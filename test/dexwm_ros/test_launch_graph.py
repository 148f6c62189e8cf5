"""The launch graph (one definition), its two starters (ROS 2 launch files, `dexwm launch`), and the process
supervision behind `dexwm launch` (prefixed output, a dying node stops the graph, SIGINT -> SIGTERM -> SIGKILL)."""

import ast
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import yaml

from dexwm_ros.launch_graph import ARGUMENTS, describe
from dexwm_ros.launch_graph.commands import node_command, parameter_value, process_specs
from dexwm_ros.launch_graph.graph import NodeSpec, find_executable
from dexwm_ros.launch_graph.supervisor import (
    EXIT_NODE_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    LaunchConfig,
    ProcessSpec,
    Supervisor,
)

ROOT = Path(__file__).resolve().parents[2]
COMMON = {"dexwm_description", "dexwm_safety", "dexwm_arm_controller", "dexwm_hand_controller", "dexwm_world_model",
          "dexwm_planner", "dexwm_recorder", "rviz2"}


def _all(graph):
    return graph.nodes + [m.node for m in graph.missing]


def _by_name(graph):
    return {n.name: n for n in _all(graph)}


# ------------------------------------------------------------------------------------------------ the graph
def test_sim_graph_holds_the_simulator_and_only_installed_nodes():
    graph = describe("reach", "sim", seed=5, episode=2, goal_image="/tmp/goal.png")
    nodes = _by_name(graph)
    assert set(nodes) == COMMON | {"dexwm_sim"}
    assert "dexwm_sim" in {n.name for n in graph.nodes}  # installed in this project
    for n in graph.nodes:
        assert find_executable(n.package, n.executable) is not None
    for m in graph.missing:
        assert find_executable(m.node.package, m.node.executable) is None or "needs a world-model checkpoint" in m.reason
        assert m.node.executable in m.reason
    sim = nodes["dexwm_sim"]
    assert sim.parameter_files == [str(ROOT / "config" / "sim_node.yaml")] and sim.overrides == {"seed": 5}
    planner = nodes["dexwm_planner"]
    assert planner.ends_run and planner.task_failed_code == 3  # dexwm_ros.exit_codes.EXIT_TASK_FAILED
    assert planner.overrides == {"task": "reach", "goal_image": "/tmp/goal.png", "seed": 5, "checkpoint": ""}
    assert "dexwm_planner" in {m.node.name for m in graph.missing}  # no checkpoint: not started
    assert graph.external == []
    # every parameter file named exists and has a section for its node
    for n in _all(graph):
        for f in n.parameter_files:
            assert n.name in yaml.safe_load(Path(f).read_text()), f"{f} has no section {n.name}"


def test_real_graph_has_the_camera_and_documents_the_drivers():
    graph = describe("grasp", "real")
    names = set(_by_name(graph))
    assert "dexwm_camera" in names and "dexwm_sim" not in names
    topics = {t.name for ext in graph.external for t in ext.topics}
    assert {"/panda_arm_controller/joint_trajectory", "/allegro_hand_position_controller/commands",
            "/joint_states"} <= topics
    camera = _by_name(graph)["dexwm_camera"]
    assert camera.parameter_files == [str(ROOT / "config" / "camera.yaml")]


def test_conditional_nodes_follow_their_arguments():
    off = describe("place", "sim")
    on = describe("place", "sim", rviz=True, record="true")
    for graph, expected in ((off, False), (on, True)):
        rviz = _by_name(graph)["rviz2"]
        assert rviz.condition == "rviz" and rviz.arguments == ("-d", str(ROOT / "config" / "dexwm.rviz"))
        active = {n.name for n in graph.active_nodes()} | {m.node.name for m in graph.active_missing()}
        assert ("rviz2" in active) is expected and ("dexwm_recorder" in active) is expected
    assert on.arguments["rviz"] == "true" and off.arguments["record"] == "false"


@pytest.mark.parametrize("call, message", [
    (lambda: describe("fly"), "task: expected one of ['reach', 'grasp', 'place'], got 'fly'"),
    (lambda: describe("reach", "mars"), "argument backend: expected one of ['sim', 'real'], got 'mars'"),
    (lambda: describe("reach", seed=-1), "argument seed: expected an integer in 0..2147483647, got -1"),
    (lambda: describe("reach", episode="two"), "argument episode: expected a non-negative integer, got 'two'"),
    (lambda: describe("reach", rviz="maybe"), "argument rviz: expected true or false, got 'maybe'"),
    (lambda: describe("reach", speed=2), "unknown launch argument(s) ['speed']"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)


def test_missing_console_scripts_are_reported_not_started(tmp_path, monkeypatch):
    """A venv that holds only the simulator node: everything else is listed as missing, nothing fake runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dexwm_sim_node").symlink_to(Path(sys.executable).with_name("dexwm_sim_node"))
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    graph = describe("reach", "sim")
    assert [n.name for n in graph.nodes] == ["dexwm_sim"]
    assert {m.node.name for m in graph.missing} == COMMON
    assert [s.name for s in process_specs(graph)] == ["dexwm_sim"]


# ----------------------------------------------------------------------------------------- command lines
def test_node_command_line_is_ros_args():
    node = NodeSpec("dexwm", "exe", "my_node", ("/cfg/a.yaml", {"seed": 3, "goal": "", "on": True}),
                    remappings=(("image", "/camera/color/image_raw"),), arguments=("-d", "x.rviz"))
    assert node_command(node, "/bin/exe") == [
        "/bin/exe", "-d", "x.rviz", "--ros-args", "-r", "__node:=my_node", "--params-file", "/cfg/a.yaml",
        "-p", "seed:=3", "-p", "goal:=''", "-p", "on:=true", "-r", "image:=/camera/color/image_raw"]


@pytest.mark.parametrize("value, text", [
    (True, "true"), (2, "2"), (1.5, "1.5"), ("", "''"), ("/data/goal.png", "/data/goal.png"), ("123", "'123'"),
    ("true", "'true'"), ("'x'", "'''x'''"), ("it's", "it's"), ([1.0, 2.0], "[1.0, 2.0]"),
])
def test_parameter_values_read_back_as_themselves(value, text):
    assert parameter_value(value) == text
    if not isinstance(value, list):
        assert yaml.safe_load(text) == value


# ------------------------------------------------------------------------ ROS 2 launch files (stubbed here)
class _Stub:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _launch_stubs():
    """Stand-ins for the `launch` / `launch_ros` packages (not installable here), for this test only."""
    class LaunchConfiguration(_Stub):
        def perform(self, context):
            return context.launch_configurations[self.args[0]]

    classes = {"LaunchDescription": type("LaunchDescription", (_Stub,), {}),
               "DeclareLaunchArgument": type("DeclareLaunchArgument", (_Stub,), {}),
               "LogInfo": type("LogInfo", (_Stub,), {}), "OpaqueFunction": type("OpaqueFunction", (_Stub,), {}),
               "IfCondition": type("IfCondition", (_Stub,), {}), "LaunchConfiguration": LaunchConfiguration,
               "Node": type("Node", (_Stub,), {})}
    mods = {name: types.ModuleType(name) for name in
            ("launch", "launch.actions", "launch.conditions", "launch.substitutions", "launch_ros",
             "launch_ros.actions")}
    mods["launch"].LaunchDescription = classes["LaunchDescription"]
    for n in ("DeclareLaunchArgument", "LogInfo", "OpaqueFunction"):
        setattr(mods["launch.actions"], n, classes[n])
    mods["launch.conditions"].IfCondition = classes["IfCondition"]
    mods["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    mods["launch_ros.actions"].Node = classes["Node"]
    return mods, classes


@pytest.mark.parametrize("task", ["reach", "grasp", "place"])
def test_launch_files_turn_the_graph_into_launch_ros_actions(task, monkeypatch):
    path = ROOT / "launch" / f"{task}.launch.py"
    mods, cls = _launch_stubs()
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delitem(sys.modules, "dexwm_ros.launch_graph.ros_launch", raising=False)
    description = runpy.run_path(str(path))["generate_launch_description"]()
    assert isinstance(description, cls["LaunchDescription"])
    entities = description.args[0]
    declared = [e for e in entities if isinstance(e, cls["DeclareLaunchArgument"])]
    assert [(d.args[0], d.kwargs["default_value"]) for d in declared] == [(a.name, a.default) for a in ARGUMENTS]
    (opaque,) = [e for e in entities if isinstance(e, cls["OpaqueFunction"])]

    values = {a.name: a.default for a in ARGUMENTS} | {"seed": "4", "rviz": "true"}
    context = types.SimpleNamespace(launch_configurations=values)
    actions = opaque.kwargs["function"](context)
    graph = describe(task, **values)
    nodes = [a for a in actions if isinstance(a, cls["Node"])]
    assert [n.kwargs["name"] for n in nodes] == [n.name for n in graph.nodes]
    for action, spec in zip(nodes, graph.nodes):
        assert action.kwargs["executable"] == spec.executable
        assert action.kwargs["parameters"] == list(spec.parameters)
        assert action.kwargs["arguments"] == list(spec.arguments)
        if spec.condition:
            assert action.kwargs["condition"].args[0].args[0] == spec.condition
        else:
            assert action.kwargs["condition"] is None
    assert _by_name(graph)["dexwm_sim"].overrides == {"seed": 4}
    logged = " ".join(a.kwargs["msg"] for a in actions if isinstance(a, cls["LogInfo"]))
    for m in graph.active_missing():
        assert m.node.name in logged

    # the launch file and the helper import only launch / launch_ros, our graph module and the package lookup
    allowed = {"launch", "launch_ros", "dexwm_ros", "dexwm_robot", "__future__", "sys", "pathlib"}
    for source in (path, ROOT / "src" / "dexwm_ros" / "launch_graph" / "ros_launch.py"):
        tree = ast.parse(source.read_text())
        imported = {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                     for a in node.names}
        assert imported <= allowed, f"{source.name} imports {imported - allowed}"


# ---------------------------------------------------------------------------------- process supervision
FAST = LaunchConfig(sigint_grace_s=3.0, sigterm_grace_s=2.0, poll_period_s=0.02, introspection_period_s=0.5)


class _Lines:
    def __init__(self):
        self.text = ""
        self.lock = threading.Lock()

    def write(self, s):
        with self.lock:
            self.text += s

    def flush(self):
        pass


def _py(code):
    return [sys.executable, "-u", "-c", code]


SLEEPER = "import time\nprint('up', flush=True)\nwhile True: time.sleep(0.05)"
STUBBORN = ("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\nwhile True: time.sleep(0.05)")


def test_a_dying_process_stops_the_others_and_fails_the_run(tmp_path):
    out = _Lines()
    flag = tmp_path / "worker_up"
    worker = f"import pathlib, time\nprint('up', flush=True)\npathlib.Path({str(flag)!r}).touch()\n" \
             "while True: time.sleep(0.05)"
    crasher = f"import pathlib, time\nwhile not pathlib.Path({str(flag)!r}).exists(): time.sleep(0.02)\n" \
              "print('bye')\nraise SystemExit(3)"
    sup = Supervisor([ProcessSpec("worker", _py(worker)), ProcessSpec("crasher", _py(crasher))], FAST, out=out)
    outcome = sup.run(timeout=30)
    assert outcome.code == EXIT_NODE_FAILED
    assert outcome.reason == "crasher died with exit code 3"
    results = {r.name: r for r in outcome.results}
    assert results["crasher"].returncode == 3 and results["crasher"].stopped_by == "exited"
    assert results["worker"].stopped_by == "SIGINT"
    assert "[crasher] bye" in out.text and "[worker ] up" in out.text
    assert "ERROR: crasher died with exit code 3" in out.text


def test_stop_escalates_from_sigint_to_sigterm_to_sigkill():
    out = _Lines()
    sup = Supervisor([ProcessSpec("stubborn", _py(STUBBORN)), ProcessSpec("polite", _py(SLEEPER))], FAST, out=out)
    sup.start()
    end = time.monotonic() + 30
    while out.text.count(" up") < 2 and time.monotonic() < end:
        time.sleep(0.02)
    outcome = sup.run(duration=0.1)
    results = {r.name: r for r in outcome.results}
    assert results["stubborn"].stopped_by == "SIGKILL" and results["stubborn"].returncode == -signal.SIGKILL
    assert results["polite"].stopped_by == "SIGINT"
    assert "sending SIGTERM to stubborn" in out.text and "sending SIGKILL to stubborn" in out.text
    assert outcome.code == EXIT_NODE_FAILED and "stubborn did not stop cleanly" in outcome.reason


def test_a_finishing_task_node_ends_the_run_successfully_and_a_timeout_fails_it(tmp_path):
    flag = tmp_path / "worker_up"
    worker = f"import pathlib, time\npathlib.Path({str(flag)!r}).touch()\nwhile True: time.sleep(0.05)"
    planner = f"import pathlib, time\nwhile not pathlib.Path({str(flag)!r}).exists(): time.sleep(0.02)\nprint('done')"
    sup = Supervisor([ProcessSpec("planner", _py(planner), ends_run=True),
                      ProcessSpec("worker", _py(worker))], FAST, out=_Lines())
    outcome = sup.run(timeout=30)
    assert (outcome.code, outcome.reason) == (EXIT_OK, "planner finished (exit code 0)")
    sup = Supervisor([ProcessSpec("worker", _py(SLEEPER))], FAST, out=_Lines())
    outcome = sup.run(timeout=0.3)
    assert outcome.code == EXIT_TIMEOUT and "timed out after 0.3 s" in outcome.reason
    # its task failed: the run fails, said as such (not as a crash); any other code is a crash
    for code, reason in ((3, "planner finished, its task failed (exit code 3)"), (1, "planner died with exit code 1")):
        out = _Lines()
        sup = Supervisor([ProcessSpec("planner", _py(f"raise SystemExit({code})"), ends_run=True, task_failed_code=3),
                          ProcessSpec("worker", _py(SLEEPER))], FAST, out=out)
        outcome = sup.run(timeout=30)
        assert (outcome.code, outcome.reason) == (EXIT_NODE_FAILED, reason)
        assert ("ERROR:" in out.text) == (code != 3), out.text


# --------------------------------------------------------------------- `dexwm launch` with the real nodes
def _launch_env(domain):
    return dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                ROS_LOG_DIR=str(ROOT / "log" / "ros"), MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))


def _dexwm():
    return str(Path(sys.executable).with_name("dexwm"))


def test_dexwm_launch_sim_brings_up_the_graph_and_reports_what_it_saw():
    pytest.importorskip("rclpy")
    done = subprocess.run([_dexwm(), "launch", "reach", "--backend", "sim", "--duration", "10"],
                          env=_launch_env(196), capture_output=True, text=True, timeout=120)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    graph = describe("reach", "sim")
    for node in graph.active_nodes():
        assert f"started {node.name} " in out
        assert f"  /{node.name}\n" in out, f"node {node.name} not seen on the ROS graph:\n{out}"
        assert f"[launch] {node.name}: exit code 0 after SIGINT" in out
    for m in graph.active_missing():
        assert f"MISSING {m.node.name}" in out
    for topic in ("/joint_states", "/camera/color/image_raw", "/tf", "/robot_description"):
        assert f"  {topic}  [" in out
    assert "[dexwm_sim" in out and "simulated Panda + Allegro up" in out
    assert f"all {len(graph.active_nodes())} nodes are on the ROS graph after" in out
    assert "ran for the requested 10 s -> dexwm launch exits 0" in out


def test_dexwm_launch_forwards_ctrl_c():
    pytest.importorskip("rclpy")
    proc = subprocess.Popen([_dexwm(), "launch", "reach", "--no-introspect"], env=_launch_env(197),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "simulated Panda + Allegro up" in line:
                break
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "interrupted (Ctrl-C / SIGTERM) -> dexwm launch exits 0" in out
    assert "[launch] dexwm_sim: exit code 0 after SIGINT" in out


def test_dexwm_launch_stops_the_graph_when_a_node_dies(tmp_path):
    """The simulator refuses its parameter file (a read-only parameter set in it) and exits 2."""
    pytest.importorskip("rclpy")
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config)
    params = yaml.safe_load((config / "sim_node.yaml").read_text())
    params["dexwm_sim"]["ros__parameters"]["control_rate"] = 50.0
    (config / "sim_node.yaml").write_text(yaml.safe_dump(params))
    env = _launch_env(198) | {"DEXWM_CONFIG_DIR": str(config)}
    done = subprocess.run([_dexwm(), "launch", "reach", "--no-introspect", "--timeout", "100"], env=env,
                          capture_output=True, text=True, timeout=120)
    out = done.stdout
    assert done.returncode == 1, out
    assert "ERROR: dexwm_sim died with exit code 2: stopping the graph" in out
    assert re.search(r"^\[dexwm_sim *\] dexwm_sim_node: .*control_rate", out, re.M), out  # its own message
    others = [n.name for n in describe("reach", "sim").active_nodes() if n.name != "dexwm_sim"]
    for name in others:
        assert f"[launch] {name}: exit code" in out


# ------------------------------------------------------------------------------------------------- RViz
def test_rviz_config_shows_robot_tf_camera_and_plan_markers():
    config = yaml.safe_load((ROOT / "config" / "dexwm.rviz").read_text())
    manager = config["Visualization Manager"]
    displays = {d["Class"]: d for d in manager["Displays"]}
    robot = displays["rviz_default_plugins/RobotModel"]
    assert robot["Description Source"] == "Topic"
    assert robot["Description Topic"]["Value"] == "/robot_description"
    assert robot["Description Topic"]["Durability Policy"] == "Transient Local"  # the description is latched
    assert displays["rviz_default_plugins/TF"]["Enabled"] is True
    assert displays["rviz_default_plugins/Image"]["Topic"]["Value"] == "/camera/color/image_raw"
    assert displays["rviz_default_plugins/MarkerArray"]["Topic"]["Value"] == "/dexwm/plan_markers"
    from dexwm_hw.description.urdf_model import load_urdf

    assert manager["Global Options"]["Fixed Frame"] == load_urdf(ROOT / "urdf" / "panda_allegro.urdf").root


def test_processes_stop_on_sigint_even_when_the_starter_ignores_it():
    """A starter run in the background by a shell without job control (`nohup dexwm launch ... &`, a CI script)
    has SIGINT ignored, which its children would inherit: the supervisor's children get SIGINT back, so the
    graceful stop still works (and a child Python installs its KeyboardInterrupt handler)."""
    check = "import signal; print('handler', signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)"
    probe = _py(check + "\nimport time\nwhile True: time.sleep(0.05)")
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        inherited = subprocess.run(_py(check), capture_output=True, text=True, timeout=60).stdout.strip()
        assert inherited == "handler False"  # what a plain child gets: the reason for the fix
        out = _Lines()
        sup = Supervisor([ProcessSpec("probe", probe), ProcessSpec("polite", _py(SLEEPER))], FAST, out=out)
        sup.start()
        end = time.monotonic() + 30
        while ("handler" not in out.text or " up" not in out.text) and time.monotonic() < end:
            time.sleep(0.02)
        outcome = sup.run(duration=0.1)
    finally:
        signal.signal(signal.SIGINT, before)
    assert "handler True" in out.text, out.text
    results = {r.name: r for r in outcome.results}
    assert results["polite"].stopped_by == "SIGINT" and results["probe"].stopped_by == "SIGINT", out.text
