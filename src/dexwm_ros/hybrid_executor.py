"""An rclpy executor that runs quick callbacks inline and only the ones that may block on worker threads.

Why not rclpy's ``MultiThreadedExecutor``: its wait loop hands every ready callback to a thread pool and, until a
worker has *started* it, yields the same callback again on every pass without waiting -- so while the pool's
workers queue for the GIL behind a busy thread (the planner's search), the spinning thread loops hot, resubmitting
thousands of copies (measured in the planner node: ~5,000 passes/s, up to 4,700 queued copies, 0.77 of a core in
the spinning thread while the search itself got 0.16; every replan waited ~0.7 s for a core).

Here a callback runs inline in the spinning thread (as in ``SingleThreadedExecutor``: finished before the next
wait, so never yielded twice), unless it belongs to one of ``threaded_groups`` or is an executor task without an
entity (``create_task``: an action server's goal execution, a future's done callbacks) -- those may block for the
length of a task and go to a worker thread, once each. Callbacks that run inline must be quick (store the message,
notify), which is what a node's subscriptions should be anyway.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any, Callable, Iterable

from rclpy.callback_groups import CallbackGroup
from rclpy.context import Context
from rclpy.executors import ConditionReachedException, Executor, ShutdownException, TimeoutException
from rclpy.task import Future

log = logging.getLogger(__name__)

RESUBMIT_PAUSE_S = 0.001  # a threaded callback yielded again before its worker started it: let the worker run


class HybridExecutor(Executor):
    """``threaded_groups``: callback groups whose callbacks may block (run on up to ``num_threads`` workers)."""

    def __init__(self, threaded_groups: Iterable[CallbackGroup], num_threads: int = 4, *,
                 context: Context | None = None) -> None:
        super().__init__(context=context)
        if int(num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.threaded_groups = tuple(threaded_groups)
        self._pool = concurrent.futures.ThreadPoolExecutor(int(num_threads), thread_name_prefix="hybrid_executor")
        self._running: dict[Any, concurrent.futures.Future] = {}
        self._running_lock = threading.Lock()

    def runs_threaded(self, entity: Any) -> bool:
        """Does the callback of ``entity`` (None: an executor task) go to a worker thread?"""
        return entity is None or getattr(entity, "callback_group", None) in self.threaded_groups

    def _reap(self) -> None:
        """Forget finished worker callbacks; an exception of one is raised here (as the spinning thread's)."""
        with self._running_lock:
            done = [(task, fut) for task, fut in self._running.items() if fut.done()]
            for task, _ in done:
                del self._running[task]
        for task, fut in done:
            fut.result()
            exception = task.exception()  # a callback's exception is kept on its rclpy Task
            if exception is not None:
                raise exception

    def _spin_once_impl(self, timeout_sec: float | None = None,
                        wait_condition: Callable[[], bool] = lambda: False) -> None:
        self._reap()
        try:
            handler, entity, _node = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ShutdownException, TimeoutException, ConditionReachedException):
            return
        if not self.runs_threaded(entity):
            handler()
            exception = handler.exception()
            if exception is not None:
                raise exception
            return
        with self._running_lock:
            queued = handler in self._running
            if not queued:
                self._running[handler] = self._pool.submit(handler)
        if queued:  # yielded again before a worker began it: do not spin hot meanwhile
            time.sleep(RESUBMIT_PAUSE_S)

    def spin_once(self, timeout_sec: float | None = None) -> None:
        self._spin_once_impl(timeout_sec)

    def _spin_once_until_future_complete(self, future: Future, timeout_sec: float | None = None) -> None:
        self._spin_once_impl(timeout_sec, future.done)

    def spin_once_until_future_complete(self, future: Future, timeout_sec: float | None = None) -> None:
        future.add_done_callback(lambda _: self.wake())
        self._spin_once_until_future_complete(future, timeout_sec)

    def join_workers(self, timeout_s: float) -> bool:
        """Wait (bounded) for the callbacks running on worker threads; True when none is left."""
        deadline = time.monotonic() + float(timeout_s)
        while True:
            with self._running_lock:
                pending = [f for f in self._running.values() if not f.done()]
            if not pending:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            concurrent.futures.wait(pending, timeout=left)

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        done = super().shutdown(timeout_sec)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._running_lock:
            finished = [task for task, fut in self._running.items() if fut.done()]
        for task in finished:  # failed after the last pass of the spin loop: say so (rclpy would print "never
            exception = task.exception()  # retrieved" when the task is collected, without saying where)
            if exception is not None:
                log.warning("a callback failed while the executor was stopping: %s: %s", type(exception).__name__,
                            exception)
        return done
