"""The ROS 2 workspace route: `colcon build` of this checkout (dexwm + dexwm_interfaces; our tf2_msgs only where
none is found) installs the ROS layout, and the installed package runs from it — nodes from lib/dexwm, config,
suites, urdf and checkpoints from share/dexwm through the ament index — with the checkout out of the way."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
NODES = {  # executable -> its params file under share/dexwm/config
    "dexwm_sim_node": "sim_node.yaml", "dexwm_safety_node": "controllers.yaml",
    "dexwm_arm_controller_node": "controllers.yaml", "dexwm_hand_controller_node": "controllers.yaml",
    "dexwm_description_node": "description.yaml", "dexwm_recorder_node": "recorder_node.yaml",
    "dexwm_world_model_node": "world_model_node.yaml", "dexwm_planner_node": "planner_node.yaml",
}


def _sourced(ws: Path, command: str, cwd: Path, env: dict | None = None, timeout: float = 120.0):
    script = f"source {VENV}/bin/activate && source {ws}/install/setup.bash && {command}"
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env or os.environ)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    if shutil.which("colcon", path=str(VENV / "bin")) is None:
        pytest.fail("colcon is not installed in the venv (requirements.txt; run scripts/setup.sh)")
    ws = tmp_path_factory.mktemp("ws")
    (ws / "src").mkdir()
    (ws / "src" / "dexwm").symlink_to(ROOT)
    env = dict(os.environ, AMENT_PREFIX_PATH=str(VENV), CMAKE_PREFIX_PATH=str(VENV), PATH=f"{VENV}/bin:"
               f"{os.environ['PATH']}")
    proc = subprocess.run([str(ROOT / "scripts" / "colcon_build.sh"), "--cmake-args", "-DBUILD_TESTING=OFF",
                           f"-DPython3_EXECUTABLE={sys.executable}"], cwd=ws, capture_output=True, text=True,
                          timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return ws


def test_colcon_installs_the_ros_layout(workspace):
    install = workspace / "install"
    assert (install / "dexwm_interfaces" / "share" / "dexwm_interfaces" / "action" / "RunTask.action").is_file()
    assert not (install / "tf2_msgs").exists()  # the venv has a tf2_msgs: ours is not built over it
    from importlib.metadata import distribution

    scripts = [ep.name for ep in distribution("dexwm").entry_points if ep.group == "console_scripts"]
    lib = install / "dexwm" / "lib" / "dexwm"
    assert sorted(p.name for p in lib.iterdir()) == sorted(scripts)
    share = install / "dexwm" / "share" / "dexwm"
    for rel in ("package.xml", "launch/reach.launch.py", "launch/grasp.launch.py", "config/planner_node.yaml",
                "config/suites/reach.json", "urdf/panda_allegro.urdf", "checkpoints/world_model_sim_cpu/config.yaml",
                "checkpoints/world_model_sim_cpu/model.safetensors", "checkpoints/encoder_sim_vit/model.safetensors"):
        assert (share / rel).is_file(), rel
    assert (install / "dexwm" / "share" / "ament_index" / "resource_index" / "packages" / "dexwm").is_file()


def test_the_installed_package_finds_its_files_through_the_ament_index(workspace, tmp_path):
    share = workspace / "install" / "dexwm" / "share" / "dexwm"
    code = "; ".join([
        "import dexwm_model, dexwm_robot.config as c",
        "from dexwm_model.encoders.sim_vit import default_weights_dir",
        "from dexwm_planner.tasks.suite import suite_path",
        "from dexwm_hw.description.generate import urdf_dir",
        "from dexwm_ros.bags.typestore import interfaces_dir",
        "from dexwm_ros.launch_graph.graph import describe",
        "g = describe('reach', checkpoint=str(c.config_dir().parent / 'checkpoints' / 'world_model_sim_cpu'))",
        "print(dexwm_model.__file__); print(c.config_dir()); print(default_weights_dir()); print(suite_path('reach'))",
        "print(urdf_dir()); print(interfaces_dir())",
        "print(' '.join(sorted({n.package for n in g.nodes}))); print(' '.join(n.executable for n in g.nodes))",
    ])
    proc = _sourced(workspace, f"python -c \"{code}\"", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(str(workspace / "install" / "dexwm" / "lib"))  # the installed copy, not the checkout
    assert lines[1:6] == [str(share / "config"), str(share / "checkpoints" / "encoder_sim_vit"),
                          str(share / "config" / "suites" / "reach.json"), str(share / "urdf"),
                          str(workspace / "install" / "dexwm_interfaces" / "share" / "dexwm_interfaces")]
    assert lines[6] == "dexwm"  # the launch description's nodes all name package dexwm ...
    lib = workspace / "install" / "dexwm" / "lib" / "dexwm"
    assert all((lib / exe).is_file() for exe in lines[7].split())  # ... and each executable is installed
    launch = (share / "launch" / "reach.launch.py").read_text()
    assert "def generate_launch_description" in launch and 'launch_description("reach")' in launch


def test_every_installed_node_starts_and_stops_on_sigint(workspace, tmp_path):
    share = workspace / "install" / "dexwm" / "share" / "dexwm"
    lib = workspace / "install" / "dexwm" / "lib" / "dexwm"
    env = dict(os.environ, ROS_DOMAIN_ID=str(150 + os.getpid() % 50), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), ROS_LOG_DIR=str(tmp_path / "roslog"))
    checkpoint = share / "checkpoints" / "world_model_sim_cpu"
    procs = {}
    for exe, params in NODES.items():
        script = (f"source {VENV}/bin/activate && source {workspace}/install/setup.bash && exec {lib / exe} "
                  f"--ros-args --params-file {share / 'config' / params} -p checkpoint:={checkpoint}")
        log = open(tmp_path / f"{exe}.log", "w")
        procs[exe] = (subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, stdout=log,
                                       stderr=subprocess.STDOUT), tmp_path / f"{exe}.log")
    try:
        deadline = time.monotonic() + 90
        waiting = set(procs)
        while waiting and time.monotonic() < deadline:  # each node is up once it has logged a line
            for exe in list(waiting):
                proc, log = procs[exe]
                assert proc.poll() is None, f"{exe} exited {proc.returncode}: {log.read_text()[-2000:]}"
                if "[INFO]" in log.read_text():
                    waiting.discard(exe)
            time.sleep(0.5)
        assert not waiting, f"no start-up line from {sorted(waiting)}"
        for proc, _ in procs.values():
            proc.send_signal(signal.SIGINT)
        for exe, (proc, log) in procs.items():  # a node alive 20 s after the signal dumps its threads and exits
            try:
                code = proc.wait(45)
            except subprocess.TimeoutExpired:
                code = None
            assert code == 0, f"{exe} exited {code} on SIGINT: {log.read_text()[-4000:]}"
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
