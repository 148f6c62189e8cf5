"""Start and stop franka-sim (a MuJoCo server speaking the real Franka FCI protocol) from the project venv.

franka-sim pins numpy 1.26, so it lives in its own venv (``scripts/setup_franka_sim.sh``; ``$FRANKA_SIM_VENV``,
default ``.venv-franka-sim`` in the checkout). The server runs :mod:`dexwm_hw.franka.sim_server` from that venv,
bound to 127.0.0.1 (the FCI command port is fixed at 1337 by libfranka), simulating the project's Panda model
(``panda/panda_nohand.xml`` in the robot model cache) instead of downloading franka-sim's default FR3.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from dexwm_hw.child_signals import default_sigint
from dexwm_robot.assets import robot_model_paths

FCI_PORT = 1337  # libfranka's robot command port (not configurable on the client side)
ROOT = Path(__file__).resolve().parents[3]
SETUP_SCRIPT = ROOT / "scripts" / "setup_franka_sim.sh"
SERVER_SCRIPT = Path(__file__).with_name("sim_server.py")


class FrankaSimUnavailable(RuntimeError):
    """franka-sim is not installed (or could not be), or its server did not come up."""


def sim_venv() -> Path:
    return Path(os.environ.get("FRANKA_SIM_VENV", ROOT / ".venv-franka-sim"))


def ensure_installed(timeout: float = 600.0) -> Path:
    """Run ``scripts/setup_franka_sim.sh`` (idempotent; installs from PyPI on first use). Returns the venv python."""
    env = dict(os.environ, DEXWM_VENV=str(Path(sys.prefix)))
    try:
        done = subprocess.run(["bash", str(SETUP_SCRIPT)], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        raise FrankaSimUnavailable(f"{SETUP_SCRIPT.name} did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise FrankaSimUnavailable(f"{SETUP_SCRIPT.name} failed (exit {done.returncode}):\n{tail}")
    python = Path(done.stdout.strip().splitlines()[-1])
    if not python.is_file():
        raise FrankaSimUnavailable(f"{SETUP_SCRIPT.name} printed {python}, which is not a file")
    return python


def port_in_use(host: str, port: int = FCI_PORT) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class FrankaSimProcess:
    """``with FrankaSimProcess() as sim:`` runs the server until the block ends (SIGINT, then SIGKILL).

    ``enforce_motion_limits`` makes franka-sim abort a motion whose commanded signal breaks the FCI's position,
    velocity, acceleration or jerk limits, as the real robot does (franka-sim only logs them otherwise).
    """

    def __init__(self, python: Path | None = None, host: str = "127.0.0.1", model: Path | None = None,
                 log_path: Path | None = None, enforce_motion_limits: bool = True) -> None:
        self.python = Path(python) if python is not None else sim_venv() / "bin" / "python"
        self.host = host
        self.enforce_motion_limits = enforce_motion_limits
        self.model = Path(model) if model is not None else robot_model_paths().panda_xml
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 60.0) -> "FrankaSimProcess":
        if not self.python.is_file():
            raise FrankaSimUnavailable(f"no franka-sim venv python at {self.python}: run scripts/setup_franka_sim.sh")
        if port_in_use(self.host):
            raise FrankaSimUnavailable(f"{self.host}:{FCI_PORT} is already taken (another robot server is running)")
        cmd = [str(self.python), str(SERVER_SCRIPT), "--host", self.host, "--model", str(self.model)]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["FRANKA_SIM_ENFORCE_MOTION_LIMITS"] = "1" if self.enforce_motion_limits else "0"
        self._log = open(self.log_path, "w") if self.log_path is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=default_sigint)  # stop() sends SIGINT
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise FrankaSimUnavailable(f"franka-sim exited with {self.proc.returncode} while starting"
                                           + (f"; log: {self.log_path}" if self.log_path else ""))
            if port_in_use(self.host):
                return self
            time.sleep(0.1)
        self.stop()
        raise FrankaSimUnavailable(f"franka-sim did not open {self.host}:{FCI_PORT} within {timeout:.0f} s")

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        rc, self.proc = self.proc.returncode, None
        return rc

    def __enter__(self) -> "FrankaSimProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
