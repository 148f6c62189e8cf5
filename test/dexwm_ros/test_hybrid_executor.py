"""HybridExecutor on real rclpy: messages are handled inline in the spinning thread while a blocking callback holds
a worker thread; each blocking callback is handed to a worker once; a worker's exception reaches the spinner."""

import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from rclpy.node import Node  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from dexwm_ros.hybrid_executor import HybridExecutor  # noqa: E402

DOMAIN_ID = 201  # its own DDS domain: other test modules' nodes are invisible


class Spinner:
    """Spin ``executor`` in a thread until stopped; remembers that thread and the first error it raised."""

    def __init__(self, executor: HybridExecutor) -> None:
        self.executor = executor
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="spinner", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception as exc:  # noqa: BLE001 - recorded for the test to inspect
                self.errors.append(exc)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5.0)


def wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


@pytest.fixture()
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def test_messages_run_inline_while_a_blocking_callback_holds_a_worker(context):
    node = Node("hybrid_executor_probe", context=context)
    blocking, messages = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
    executor = HybridExecutor([blocking], num_threads=2, context=context)
    assert executor.runs_threaded(None)  # executor tasks (an action server's goal execution) may block
    release, started = threading.Event(), threading.Event()
    seen: dict[str, list] = {"blocking": [], "message": []}

    def on_tick() -> None:
        seen["blocking"].append(threading.current_thread())
        started.set()
        release.wait(10.0)

    def on_message(msg: String) -> None:
        seen["message"].append((msg.data, threading.current_thread()))

    timer = node.create_timer(0.01, on_tick, callback_group=blocking)
    node.create_subscription(String, "hybrid_chatter", on_message, 10, callback_group=messages)
    pub = node.create_publisher(String, "hybrid_chatter", 10)
    executor.add_node(node)
    spinner = Spinner(executor)
    try:
        assert started.wait(10.0), "the blocking callback never ran"
        timer.cancel()
        assert wait_for(lambda: pub.get_subscription_count() > 0)
        for i in range(5):
            pub.publish(String(data=f"m{i}"))
        # the blocking callback still holds its worker: the messages are handled anyway, in the spinning thread
        assert wait_for(lambda: len(seen["message"]) == 5), seen["message"]
        assert not release.is_set()
        assert [d for d, _ in seen["message"]] == [f"m{i}" for i in range(5)]
        assert all(t is spinner.thread for _, t in seen["message"])
        assert len(seen["blocking"]) == 1 and seen["blocking"][0] is not spinner.thread
        assert len(executor._running) == 1  # handed to a worker once, not once per pass of the wait loop
        release.set()
        assert executor.join_workers(5.0)
        assert not spinner.errors
    finally:
        release.set()
        spinner.close()
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()


def test_an_exception_in_a_worker_callback_reaches_the_spinning_thread(context):
    node = Node("hybrid_executor_raiser", context=context)
    blocking = MutuallyExclusiveCallbackGroup()
    executor = HybridExecutor([blocking], num_threads=1, context=context)
    timer = None

    def on_tick() -> None:
        timer.cancel()
        raise RuntimeError("controller timed out")

    timer = node.create_timer(0.01, on_tick, callback_group=blocking)
    executor.add_node(node)
    spinner = Spinner(executor)
    try:
        assert wait_for(lambda: spinner.errors), "the worker's exception was swallowed"
        assert isinstance(spinner.errors[0], RuntimeError) and "controller timed out" in str(spinner.errors[0])
    finally:
        spinner.close()
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
    with pytest.raises(ValueError, match="num_threads"):
        HybridExecutor([], num_threads=0, context=context)


def test_a_callback_that_fails_after_the_last_spin_is_reported_at_shutdown(context, caplog):
    node = Node("hybrid_executor_late", context=context)
    blocking = MutuallyExclusiveCallbackGroup()
    executor = HybridExecutor([blocking], num_threads=1, context=context)
    started, fail = threading.Event(), threading.Event()
    timer = None

    def on_tick() -> None:
        timer.cancel()
        started.set()
        fail.wait(10.0)
        raise RuntimeError("camera stopped")

    timer = node.create_timer(0.01, on_tick, callback_group=blocking)
    executor.add_node(node)
    spinner = Spinner(executor)
    try:
        assert started.wait(10.0)
        spinner.close()  # the spin loop has stopped; the callback fails only now
        fail.set()
        assert executor.join_workers(5.0)
        (task,) = executor._running
        with caplog.at_level("WARNING", logger="dexwm_ros.hybrid_executor"):
            executor.shutdown(timeout_sec=2.0)
        assert "camera stopped" in caplog.text and task._exception_fetched  # reported, not "never retrieved"
        assert not spinner.errors
    finally:
        fail.set()
        spinner.close()
        node.destroy_node()
