"""Start a set of processes, prefix their output with their names, watch them, and stop them cleanly (no ROS).

Each process runs in its own session (so a terminal's Ctrl-C reaches only the starter, which forwards it) and,
on Linux, is asked to receive SIGTERM if the starter dies. Stopping is ``SIGINT`` to every process, then
``SIGTERM`` to those still running after ``sigint_grace_s``, then ``SIGKILL`` after ``sigterm_grace_s``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from dexwm_hw.child_signals import default_sigint
from dexwm_robot.config import load_section

CLEAN_EXIT_CODES = (0, -signal.SIGINT, 128 + signal.SIGINT)


@dataclass
class LaunchConfig:
    sigint_grace_s: float
    sigterm_grace_s: float
    poll_period_s: float
    introspection_period_s: float

    def __post_init__(self) -> None:
        for name in ("sigint_grace_s", "sigterm_grace_s", "poll_period_s", "introspection_period_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"launch.{name}: expected a positive number of seconds, got {value!r}")


def load_launch_config(path: str = "launch.yaml") -> LaunchConfig:
    return load_section(LaunchConfig, path, "launch")


@dataclass
class ProcessSpec:
    name: str
    cmd: list[str]
    ends_run: bool = False  # its exit with code 0 ends the run successfully
    task_failed_code: int | None = None  # with ends_run: the exit code by which it reports a failed task (no crash)


@dataclass
class ProcessResult:
    name: str
    returncode: int | None
    stopped_by: str  # "exited" (on its own), "SIGINT", "SIGTERM", "SIGKILL"


@dataclass
class RunOutcome:
    code: int  # the starter's exit code
    reason: str
    results: list[ProcessResult] = field(default_factory=list)


EXIT_OK, EXIT_NODE_FAILED, EXIT_TIMEOUT = 0, 1, 3


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the starter dies (Linux ``prctl(PR_SET_PDEATHSIG)``), and SIGINT (the
    graceful stop) not ignored even when the starter runs in the background (:mod:`dexwm_hw.child_signals`)."""
    default_sigint()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


class Supervisor:
    def __init__(self, specs: list[ProcessSpec], config: LaunchConfig, out: TextIO | None = None,
                 env: dict[str, str] | None = None) -> None:
        names = [s.name for s in specs]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"process names must be unique; repeated: {repeated}")
        self.specs = specs
        self.config = config
        self.out = out if out is not None else sys.stdout
        self.env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
        self.procs: dict[str, subprocess.Popen] = {}
        self._readers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._interrupt = threading.Event()
        self._width = max((len(n) for n in names), default=0)

    # ------------------------------------------------------------------------------------------- output
    def say(self, text: str, source: str = "launch") -> None:
        with self._lock:
            for line in text.splitlines() or [""]:
                self.out.write(f"[{source}] {line}\n")
            self.out.flush()

    def _pump(self, name: str, stream) -> None:
        for line in iter(stream.readline, ""):
            with self._lock:
                self.out.write(f"[{name.ljust(self._width)}] {line.rstrip()}\n")
                self.out.flush()
        stream.close()

    # ------------------------------------------------------------------------------------------ control
    def interrupt(self) -> None:
        """Ask the run to stop (what the starter's SIGINT / SIGTERM handler calls)."""
        self._interrupt.set()

    def start(self) -> None:
        for spec in self.specs:
            try:
                proc = subprocess.Popen(spec.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        errors="replace", env=self.env, start_new_session=True,
                                        preexec_fn=_die_with_parent)
            except OSError as exc:
                self.say(f"ERROR: cannot start {spec.name} ({' '.join(spec.cmd)}): {exc}; stopping the graph")
                self.stop()
                raise
            self.procs[spec.name] = proc
            self.say(f"started {spec.name} (pid {proc.pid}): {' '.join(spec.cmd)}")
            reader = threading.Thread(target=self._pump, args=(spec.name, proc.stdout), daemon=True)
            reader.start()
            self._readers.append(reader)

    def run(self, duration: float | None = None, timeout: float | None = None,
            on_poll: Callable[[], None] | None = None) -> RunOutcome:
        """Watch until a process exits, ``duration`` / ``timeout`` passes or :meth:`interrupt`; then stop all."""
        if not self.procs:
            self.start()
        try:
            outcome = self._watch(duration, timeout, on_poll)
        except BaseException:
            self.say("ERROR: the starter failed: stopping the graph")
            self.stop()
            raise
        outcome.results = self.stop()
        unclean = [r for r in outcome.results
                   if r.stopped_by in ("SIGTERM", "SIGKILL")
                   or (r.stopped_by == "SIGINT" and r.returncode not in CLEAN_EXIT_CODES)]
        if unclean and outcome.code == EXIT_OK:
            outcome.code = EXIT_NODE_FAILED
            outcome.reason += "; " + ", ".join(f"{r.name} did not stop cleanly" for r in unclean)
        return outcome

    def _watch(self, duration: float | None, timeout: float | None,
               on_poll: Callable[[], None] | None) -> RunOutcome:
        started = time.monotonic()
        outcome: RunOutcome | None = None
        while outcome is None:
            for spec in self.specs:
                rc = self.procs[spec.name].poll()
                if rc is None:
                    continue
                if spec.ends_run and rc == 0:
                    outcome = RunOutcome(EXIT_OK, f"{spec.name} finished (exit code 0)")
                elif spec.ends_run and rc == spec.task_failed_code:
                    outcome = RunOutcome(EXIT_NODE_FAILED, f"{spec.name} finished, its task failed (exit code {rc})")
                    self.say(f"{spec.name} finished, its task failed (exit code {rc}): stopping the graph")
                else:
                    outcome = RunOutcome(EXIT_NODE_FAILED, f"{spec.name} died with exit code {rc}")
                    self.say(f"ERROR: {spec.name} died with exit code {rc}: stopping the graph")
                break
            if outcome is not None:
                break
            elapsed = time.monotonic() - started
            if self._interrupt.is_set():
                outcome = RunOutcome(EXIT_OK, "interrupted (Ctrl-C / SIGTERM)")
            elif duration is not None and elapsed >= duration:
                outcome = RunOutcome(EXIT_OK, f"ran for the requested {duration:g} s")
            elif timeout is not None and elapsed >= timeout:
                outcome = RunOutcome(EXIT_TIMEOUT, f"timed out after {timeout:g} s before the task finished")
                self.say(f"ERROR: {outcome.reason}")
            elif on_poll is not None:
                on_poll()
            if outcome is None:
                self._interrupt.wait(self.config.poll_period_s)
        return outcome

    def stop(self) -> list[ProcessResult]:
        """SIGINT everything still running, then SIGTERM, then SIGKILL; returns how each process ended."""
        how: dict[str, str] = {n: "exited" for n, p in self.procs.items() if p.poll() is not None}
        for sig, grace in ((signal.SIGINT, self.config.sigint_grace_s),
                           (signal.SIGTERM, self.config.sigterm_grace_s), (signal.SIGKILL, None)):
            running = [n for n, p in self.procs.items() if p.poll() is None]
            if not running:
                break
            self.say(f"sending {sig.name} to {', '.join(running)}")
            for n in running:
                try:
                    self.procs[n].send_signal(sig)
                except ProcessLookupError:
                    continue
                how[n] = sig.name
            end = time.monotonic() + (grace if grace is not None else 5.0)
            while time.monotonic() < end and any(self.procs[n].poll() is None for n in running):
                time.sleep(0.02)
        for p in self.procs.values():
            if p.poll() is None:
                p.wait()
        for r in self._readers:
            r.join(timeout=2.0)
        results = [ProcessResult(n, p.returncode, how.get(n, "exited")) for n, p in self.procs.items()]
        for r in results:
            self.say(f"{r.name}: exit code {r.returncode}" + ("" if r.stopped_by == "exited"
                                                              else f" after {r.stopped_by}"))
        return results
