"""A client node in its own rclpy context, spun in a background thread, beside a graph of node processes.

It is how a program outside the graph talks to it and waits on it (the test bag maker, the tests of the nodes):
it collects what topics carry, tracks the 23 measured joints, calls services, waits until a condition holds
while watching that no node process died, and knows when every hop of a command chain is connected (DDS drops
what is published before a subscriber is discovered).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from sensor_msgs.msg import JointState

from dexwm_ros.controller_common import joint_positions
from dexwm_robot.joint_names import ALL_JOINT_NAMES


class GraphWaitError(AssertionError):
    """A wait of the probe ended without its condition: timed out, or a node process died."""


def is_ready(value) -> bool:
    """What ``wait_for`` accepts from its predicate: anything but None, False (numpy's too) and an empty list, tuple
    or string (nothing received yet); an array or a message counts as ready."""
    if value is None:
        return False
    if isinstance(value, (bool, np.bool_, list, tuple, str)):
        return bool(value)
    return True


class GraphProbe:
    def __init__(self, name: str, domain_id: int, processes: Iterable = (), *, threads: int = 1,
                 wait_s: float = 60.0, describe: Callable[[], str] = lambda: "") -> None:
        """``processes``: the graph's node processes (``NodeProcess``); a wait fails at once when one of them exits
        (a subclass whose set of processes changes overrides ``watched``).
        ``wait_s``: the default bound of a wait (wall seconds; generous for a loaded machine, never a timing
        assertion). ``describe()``: extra context for a timed-out wait's message."""
        self.processes = list(processes)
        self.wait_s = wait_s
        self.describe = describe
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.lock = threading.Lock()
        self.received: dict[str, list] = {}
        self.joint_states: list[tuple[float, np.ndarray]] = []
        self.executor = (SingleThreadedExecutor(context=self.context) if threads == 1
                         else MultiThreadedExecutor(num_threads=threads, context=self.context))
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, name=f"{name}_spin", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------------------------------------ topics
    def collect(self, msg_type, topic: str, qos=10, callback_group=None) -> None:
        """Keep every message of ``topic`` (read them with ``got``)."""
        with self.lock:
            self.received.setdefault(topic, [])

        def on(msg) -> None:
            with self.lock:
                self.received[topic].append(msg)

        self.node.create_subscription(msg_type, topic, on, qos, callback_group=callback_group)

    def got(self, topic: str) -> list:
        with self.lock:
            return list(self.received[topic])

    def last(self, topic: str):
        with self.lock:
            msgs = self.received[topic]
            return msgs[-1] if msgs else None

    def track_joints(self, topic: str = "/joint_states") -> None:
        """Record the 23 joints (``ALL_JOINT_NAMES`` order) of every message that has them all, with its arrival."""
        def on(msg: JointState) -> None:
            q = joint_positions(msg.name, msg.position, ALL_JOINT_NAMES)
            if q is not None:
                with self.lock:
                    self.joint_states.append((time.monotonic(), np.asarray(q, dtype=np.float64)))

        self.node.create_subscription(JointState, topic, on, 50)

    def joints(self) -> np.ndarray | None:
        with self.lock:
            return self.joint_states[-1][1] if self.joint_states else None

    def joints_since(self, t0: float) -> list[np.ndarray]:
        with self.lock:
            return [q for t, q in self.joint_states if t >= t0]

    # ------------------------------------------------------------------------------------------------- waits
    def watched(self) -> list:
        """The node processes whose exit fails a wait."""
        return self.processes

    def wait_for(self, predicate: Callable[[], object], what: str, timeout: float | None = None,
                 detail: Callable[[], str] | None = None):
        """Poll ``predicate`` until it gives a ready value (see ``is_ready``) and return that value."""
        timeout = self.wait_s if timeout is None else timeout
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for p in self.watched():
                if p.poll() is not None:
                    log = p.log() if hasattr(p, "log") else ""
                    raise GraphWaitError(f"{p.args[0]} exited (rc {p.returncode}) while waiting for {what}:\n{log}")
            value = predicate()
            if is_ready(value):
                return value
            time.sleep(0.02)
        extra = (detail or self.describe)()
        raise GraphWaitError(f"timed out after {timeout:.0f} s waiting for {what}" + (f"; {extra}" if extra else ""))

    def wait_settled(self, what: str, window_s: float = 0.3, tolerance: float = 1e-3) -> np.ndarray:
        """The joints once they stopped changing: at least 4 samples over ``window_s`` within ``tolerance`` rad."""
        def settled():
            with self.lock:
                recent = [q for t, q in self.joint_states if t >= time.monotonic() - window_s]
            if len(recent) < 4:
                return None
            return recent[-1] if np.ptp(np.stack(recent), axis=0).max() < tolerance else None

        return self.wait_for(settled, what)

    def wait_connected(self, hops: Sequence[tuple[str, int, int]]) -> None:
        """Each ``(topic, publishers, subscribers)``: at least that many of each discovered."""
        for topic, publishers, subscribers in hops:
            self.wait_for(lambda: self.node.count_publishers(topic) >= publishers
                          and self.node.count_subscribers(topic) >= subscribers, f"the {topic} connections")

    def call(self, srv_type, name: str, request):
        client = self.node.create_client(srv_type, name)
        self.wait_for(lambda: client.service_is_ready(), f"service {name}")
        future = client.call_async(request)
        self.wait_for(future.done, f"response of {name}")
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
