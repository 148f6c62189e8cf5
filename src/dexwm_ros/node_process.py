"""One of our console-script nodes as a child process, with its params file under ``config/``, its own DDS domain
and its output in a log file; stopped as ``ros2 launch`` stops a node (SIGINT, then SIGKILL after a grace period).

Used where a program drives a small graph itself: the test bag maker and the tests of the nodes. ``dexwm launch``
has its own supervisor (several processes, prefixed output, SIGINT -> SIGTERM -> SIGKILL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from dexwm_hw.child_signals import default_sigint
from dexwm_robot.config import config_dir


class NodeProcess:
    def __init__(self, script: str, log_path: Path, *, domain_id: int, params: str | None = None,
                 overrides: Sequence[str] = (), ros_args: Sequence[str] = (), ros_log_dir: Path | None = None) -> None:
        """Start ``script`` (a console script next to this Python) with ``--params-file config/<params>``, each
        ``name:=value`` of ``overrides`` as ``-p`` and ``ros_args`` (e.g. ``-r __ns:=/a``) after them."""
        self.log_path = Path(log_path)
        cmd = [str(Path(sys.executable).with_name(script)), "--ros-args"]
        if params is not None:
            cmd += ["--params-file", str(config_dir() / params)]
        for o in overrides:
            cmd += ["-p", o]
        cmd += list(ros_args)
        full_env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                        MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
        if ros_log_dir is not None:
            full_env["ROS_LOG_DIR"] = str(ros_log_dir)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log:
            self.popen = subprocess.Popen(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                          preexec_fn=default_sigint)

    @property
    def args(self) -> list[str]:
        return self.popen.args

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def kill(self) -> None:
        self.popen.kill()

    def send_signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, grace_s: float = 20.0, sig: int = signal.SIGINT) -> str:
        """Ask it to stop (``sig``), kill it after ``grace_s``; its whole log."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.log()
