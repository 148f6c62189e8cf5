"""The one ``main`` of our nodes: init, spin until SIGINT/SIGTERM (or the node says it is done), close, exit code.

Signals only set a flag that the spin loop checks between callbacks (every ``POLL_S`` at the latest). Letting
Python raise ``KeyboardInterrupt`` wherever the main thread happens to be (rclpy's default) can interrupt the
executor half-way through building a ``Task``; the half-built object then prints a traceback when it is collected
at exit, and a node under a launch file looks as if it crashed. Here nothing is interrupted: the node's ``close()``
runs, the executor is shut down and the node destroyed before rclpy shuts down.

A node must also *end* once told to: if it is still alive ``STOP_DEADLINE_S`` after the stop signal (a callback
that does not return, a middleware teardown that hangs), the stack of every thread is printed to stderr, so the
hang can be found, and the process exits at once -- with the node's exit code when its own ``close()`` had
finished (only the teardown hung), else ``EXIT_STOP_HUNG``.
"""

from __future__ import annotations

import concurrent.futures
import faulthandler
import os
import signal
import sys
import threading
from typing import Callable, Mapping

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from dexwm_ros.exit_codes import EXIT_PARAMETERS
from dexwm_robot.config import ConfigError

POLL_S = 0.1  # longest a stop signal waits for the executor to notice it
WORKERS_GRACE_S = 5.0  # callbacks still running at a stop get this long to finish
STOP_DEADLINE_S = 20.0  # a node still alive this long after SIGINT/SIGTERM dumps its threads and exits
EXIT_STOP_HUNG = 1  # exit code when the node had not even closed by the deadline
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """Set by SIGINT/SIGTERM (main thread only; elsewhere rclpy's own handlers stay in charge)."""

    def __init__(self, program: str = "node", deadline_s: float | None = None) -> None:
        self.event = threading.Event()
        self.program = program
        self.deadline_s = float(STOP_DEADLINE_S if deadline_s is None else deadline_s)
        self.closed_code: int | None = None  # set once the node's close() has run: the exit code to leave with
        self._previous: dict[int, object] = {}
        self._deadline: threading.Timer | None = None

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return True

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002 - the signal module's signature
        self.event.set()
        if self._deadline is None:
            self._deadline = threading.Timer(self.deadline_s, self._expire)
            self._deadline.daemon = True
            self._deadline.start()

    def cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()

    def _expire(self) -> None:
        """The stop deadline passed with the process still alive: show where every thread is, then leave."""
        where = "its middleware teardown" if self.closed_code is not None else "its callbacks or close()"
        print(f"{self.program}: still running {self.deadline_s:g} s after the stop signal (hung in {where}); "
              "thread stacks follow, then exit", file=sys.stderr, flush=True)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(self.closed_code if self.closed_code is not None else EXIT_STOP_HUNG)


def _let_workers_finish(executor: Executor, timeout_s: float) -> None:
    """Wait (bounded) until a multi-threaded executor's worker threads have finished their callbacks.

    rclpy's ``MultiThreadedExecutor.shutdown`` destroys the executor's guard condition before it joins its worker
    threads; a callback still in a worker then fails on that guard condition, and the failed task prints "The
    following exception was never retrieved: cannot use Destroyable ..." at exit. The node's ``close()`` has
    already told its long-running callbacks to end."""
    join = getattr(executor, "join_workers", None)  # dexwm_ros.hybrid_executor.HybridExecutor
    if callable(join):
        join(timeout_s)
        return
    pool = getattr(executor, "_executor", None)  # the worker pool of a MultiThreadedExecutor
    if not isinstance(pool, concurrent.futures.ThreadPoolExecutor):
        return
    joiner = threading.Thread(target=pool.shutdown, kwargs={"wait": True}, name="executor_workers_join", daemon=True)
    joiner.start()
    joiner.join(timeout_s)


def run_node(make_node: Callable[[], Node], program: str, args: list[str] | None = None, *,
             executor_factory: Callable[[Node], Executor] = lambda _node: SingleThreadedExecutor(),
             fatal: Mapping[type[BaseException], int] | None = None,
             until: Callable[[Node], bool] | None = None,
             exit_code: Callable[[Node], int] | None = None) -> int:
    """Build the node with ``make_node`` and spin it; the node's optional ``start()`` runs before spinning and its
    optional ``close()`` before it is destroyed; ``executor_factory(node)`` gives the executor that spins it.

    ``fatal`` maps further exception types raised while building or spinning the node to exit codes; a
    configuration or parameter error always gives exit code 2. Each is printed as ``program: message``.
    ``until(node)`` ends the spin early (a node that finishes a job); ``exit_code(node)`` is then the exit code."""
    stop = StopFlag(program)
    own_signals = stop.install()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO if own_signals else SignalHandlerOptions.ALL)
    errors = {ConfigError: EXIT_PARAMETERS, ParameterException: EXIT_PARAMETERS, **(fatal or {})}
    node = None
    executor = None
    code = 0
    try:
        node = make_node()
        start = getattr(node, "start", None)
        if callable(start):
            start()
        executor = executor_factory(node)
        executor.add_node(node)
        while not stop.event.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=POLL_S)
            if until is not None and until(node):
                code = exit_code(node) if exit_code is not None else 0
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except tuple(errors) as exc:
        code = next(c for t, c in errors.items() if isinstance(exc, t))
        print(f"{program}: {exc}", file=sys.stderr, flush=True)
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if callable(close):
                close()
        stop.closed_code = code
        if executor is not None:
            _let_workers_finish(executor, WORKERS_GRACE_S)
            executor.shutdown(timeout_sec=WORKERS_GRACE_S)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        stop.restore()
        stop.cancel_deadline()
    return code
