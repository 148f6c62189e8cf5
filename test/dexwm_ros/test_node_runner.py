"""run_node: a stop signal ends the spin between callbacks (close() runs, exit 0, nothing printed from rclpy's
teardown), a busy node included; bad parameters and mapped errors give their exit codes; ``until`` ends a job."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("rclpy")

DOMAIN_ID = 61

NODE_SCRIPT = textwrap.dedent("""
    import sys, time
    import rclpy
    from rclpy.node import Node
    import dexwm_ros.node_runner as runner
    from dexwm_ros.node_runner import run_node
    from dexwm_robot.config import ConfigError

    MODE = sys.argv[1]

    class Busy(Node):
        def __init__(self):
            super().__init__("runner_probe")
            if MODE == "config":
                raise ConfigError("probe.yaml: rate must be positive")
            if MODE == "mapped":
                raise LookupError("no such camera: 42")
            self.ticks = 0
            self.create_timer(0.001, self._tick)  # a 1 kHz timer: the executor builds a Task every millisecond
            print("probe up", flush=True)

        def _tick(self):
            self.ticks += 1

        def close(self):
            if MODE == "hang_close":
                time.sleep(3600)
            print(f"probe closed after {self.ticks} ticks", flush=True)

    if MODE.startswith("hang"):
        runner.STOP_DEADLINE_S = 2.0
    if MODE == "hang_teardown":  # the middleware's teardown never returns
        rclpy.try_shutdown = lambda *a, **k: time.sleep(3600)

    until = (lambda node: node.ticks >= 50) if MODE == "job" else None
    sys.exit(run_node(Busy, "probe_node", fatal={LookupError: 7}, until=until, exit_code=lambda node: 3))
""")


def _start(mode: str) -> subprocess.Popen:
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", NODE_SCRIPT, mode], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_up(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline()
    assert line.strip() == "probe up", line + proc.stdout.read()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_closes_a_busy_node_cleanly(sig):
    # the signal lands at a random point of a 1 kHz spin, several times over
    for delay in (0.05, 0.13, 0.31, 0.47, 0.7):
        proc = _start("spin")
        _wait_up(proc)
        time.sleep(delay)
        proc.send_signal(sig)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"the node ignored {sig.name} sent {delay} s after start-up: {proc.communicate()[0]}")
        assert proc.returncode == 0, out
        assert "probe closed after" in out, out
        assert "Traceback" not in out and "Exception ignored" not in out, out


def test_errors_while_building_the_node_give_their_exit_codes():
    for mode, code, message in (("config", 2, "probe_node: probe.yaml: rate must be positive"),
                                ("mapped", 7, "probe_node: no such camera: 42")):
        proc = _start(mode)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == code, out
        assert message in out and "Traceback" not in out, out


def test_until_ends_the_spin_with_the_nodes_exit_code():
    proc = _start("job")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 3, out
    ticks = int(out.split("probe closed after ")[1].split()[0])
    assert ticks >= 50, out


@pytest.mark.parametrize("mode, code, where", [("hang_close", 1, "its callbacks or close()"),
                                               ("hang_teardown", 0, "its middleware teardown")])
def test_a_node_that_hangs_after_the_stop_signal_shows_its_threads_and_exits(mode, code, where):
    proc = _start(mode)
    _wait_up(proc)
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the node hung past its stop deadline: {proc.communicate()[0]}")
    assert proc.returncode == code, out
    assert f"probe_node: still running 2 s after the stop signal (hung in {where})" in out, out
    assert "Thread 0x" in out or "Current thread" in out, out  # the stacks of its threads
    assert ("probe closed after" in out) == (mode == "hang_teardown"), out
