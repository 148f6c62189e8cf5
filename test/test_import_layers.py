"""The import contract of pyproject.toml ``[tool.importlinter]`` (docs/architecture.md): imports only run down the
layers dexwm_cli > dexwm_ros > dexwm_planner > dexwm_hw > dexwm_model > dexwm_robot, and only dexwm_ros (with the
command above it) imports ROS. ``lint-imports`` (import-linter) checks it, here and so in CI."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("dexwm_cli", "dexwm_ros", "dexwm_planner", "dexwm_hw", "dexwm_model", "dexwm_robot")


def lint_imports(cwd: Path, src: Path) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.is_file():
        pytest.fail(f"{LINT_IMPORTS} is missing: import-linter is not installed (requirements.txt; run scripts/setup.sh)")
    # the packages are found through PYTHONPATH first, so a copy of the tree is read instead of the installed one
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_packages_import_only_downward():
    proc = lint_imports(ROOT, ROOT / "src")
    assert proc.returncode == 0, f"lint-imports found imports against the layers:\n{proc.stdout}\n{proc.stderr}"
    assert "Contracts: 2 kept, 0 broken." in proc.stdout, proc.stdout


@pytest.fixture
def tree_copy(tmp_path):
    """The packages and pyproject.toml in a scratch folder, to add a forbidden import to."""
    for name in PACKAGES:
        shutil.copytree(ROOT / "src" / name, tmp_path / "src" / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize("module, line, broken", [
    # the simulator importing the planner: a back-arrow across two layers
    ("dexwm_hw/safety/config.py", "from dexwm_planner.tasks import suite", "dexwm_hw is not allowed to import dexwm_planner"),
    # the robot's facts importing the model, inside a function (still an import)
    ("dexwm_robot/joint_names.py", "def _late():\n    from dexwm_model.data import episode", "dexwm_robot is not allowed to import dexwm_model"),
    # a ROS node's helper used from the planning core
    ("dexwm_planner/tasks/suite.py", "from dexwm_ros import exit_codes", "dexwm_planner is not allowed to import dexwm_ros"),
    # ROS in the core
    ("dexwm_model/data/raw_image.py", "import rclpy", "dexwm_model is not allowed to import rclpy"),
    ("dexwm_hw/sim/robot.py", "from sensor_msgs.msg import Image", "dexwm_hw is not allowed to import sensor_msgs"),
])
def test_a_new_back_arrow_breaks_the_contract(tree_copy, module, line, broken):
    path = tree_copy / "src" / module
    path.write_text(path.read_text() + f"\n\n{line}\n")
    proc = lint_imports(tree_copy, tree_copy / "src")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 broken" in proc.stdout and broken in proc.stdout, proc.stdout
