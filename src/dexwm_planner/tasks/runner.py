"""The one closed-loop task runner: observe -> plan -> execute the waypoint(s) -> check -> ... until a stop.

Both ``dexwm bench tasks`` (:func:`dexwm_planner.benchmark.harness.run_closed_loop`, a :class:`RobotPort` around
the MuJoCo simulator) and the ROS planner node (:mod:`dexwm_ros.planner_port`, waiting on topics and publishing
waypoints through the safety layer) run a task with :func:`run_task`, so the benchmark's numbers measure the loop
a user launches. The loop, per replan:

1. check (:meth:`TaskLoop.check`): the port's own stop (cancel, e-stop, stale inputs; none in the simulator), the
   task's success test (held for ``success.hold_ticks`` control ticks, as the port measures it), ``max_steps``
   replans whose waypoints were executed, ``max_duration`` seconds since the start (the port's clock);
2. ``port.observe``: one observation (camera image, joints, time) from after the last move ended;
3. ``policy.observe`` + ``policy.plan`` (a :class:`~dexwm_planner.mpc.GoalImageMPC` or a baseline);
4. ``port.planned`` (publish / record the plan), check again (a stop that came while planning ends the task before
   the plan is executed);
5. ``port.execute`` of every planned waypoint in turn; a port stops inside a waypoint only for its own reasons
   (passed as ``interrupt``: the check without the step limit), so the last replan's waypoints are always
   executed in full before the step limit ends the task.

Stop reasons are :class:`Stop` (reason, message); the runner's own are ``SUCCEEDED`` and ``TIMEOUT`` (the names of
``dexwm_interfaces/action/RunTask``'s results).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

SUCCEEDED = "SUCCEEDED"
TIMEOUT = "TIMEOUT"


@dataclass(frozen=True)
class Stop:
    """Why a task ended: a reason name and a message (empty for a success)."""

    reason: str
    message: str = ""


@dataclass
class Observation:
    """One observation of the robot: RGB image (H, W, 3) uint8, the 23 joints, its time (s) for the policy."""

    image: np.ndarray
    joints: np.ndarray
    t: float
    wait_s: float = 0.0  # s the port took to get it (render, or the wait for a fresh frame)
    extra: dict[str, Any] = field(default_factory=dict)  # port-specific (e.g. the frame's arrival time)


@dataclass
class Executed:
    """One waypoint's execution: whether the robot took it, simulated control ticks, a stop that ended it."""

    executed: bool = True
    ticks: int = 0
    stop: Stop | None = None


@dataclass
class Replan:
    """One replan of a run: its observation, the policy's step (``MPCStep``), timings and what was executed."""

    index: int
    observation: Observation
    step: Any
    observe_s: float
    plan_s: float
    executed: int = 0  # waypoints the robot took
    ticks: int = 0  # simulated control ticks of those (0 for a real robot)


@dataclass
class TaskRun:
    """A finished run: the stop and every replan in order."""

    stop: Stop
    replans: list[Replan]
    executed_replans: int  # replans at least one of whose waypoints was executed (what max_steps counts)
    waypoints: int  # waypoints executed
    ticks: int
    duration_s: float


class RobotPort(Protocol):
    """What :func:`run_task` drives. ``interrupt()`` (given to the blocking calls) returns a :class:`Stop` when the
    port should give up waiting; a port whose calls do not block (a simulator) may ignore it."""

    def clock(self) -> float: ...

    def stop_reason(self) -> Stop | None: ...

    def succeeded(self) -> bool: ...

    def observe(self, interrupt: Callable[[], Stop | None]) -> Observation | Stop: ...

    def planning(self, loop: "TaskLoop") -> None: ...

    def planned(self, replan: Replan, loop: "TaskLoop") -> None: ...

    def executing(self, replan: Replan, loop: "TaskLoop") -> None: ...

    def execute(self, waypoint: np.ndarray, duration: float, replan: Replan, i: int,
                interrupt: Callable[[], Stop | None]) -> Executed: ...

    def executed(self, replan: Replan, loop: "TaskLoop") -> None: ...


class TaskLoop:
    """The state of one run (its counters are read by the ports' hooks)."""

    def __init__(self, port: RobotPort, policy, max_steps: int, max_duration: float | None = None,
                 t0: float | None = None) -> None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps: expected a positive integer, found {max_steps!r}")
        if max_duration is not None and not (isinstance(max_duration, (int, float)) and max_duration > 0):
            raise ValueError(f"max_duration: expected a number of seconds > 0 or None, found {max_duration!r}")
        self.port, self.policy = port, policy
        self.max_steps, self.max_duration = max_steps, max_duration
        self.t0 = port.clock() if t0 is None else t0  # max_duration counts from here (the port's clock)
        self.replans: list[Replan] = []
        self.executed_replans = 0
        self.waypoints = 0
        self.ticks = 0

    def check(self, step_limit: bool = True) -> Stop | None:
        """The port's stop, success, the step limit, the duration limit, in this order."""
        stop = self.port.stop_reason()
        if stop is not None:
            return stop
        if self.port.succeeded():
            return Stop(SUCCEEDED)
        if step_limit and self.executed_replans >= self.max_steps:
            return Stop(TIMEOUT, f"max_steps ({self.max_steps}) reached")
        if self.max_duration is not None and self.port.clock() - self.t0 > self.max_duration:
            return Stop(TIMEOUT, f"max_duration ({self.max_duration:g} s) reached")
        return None

    def interrupt(self) -> Stop | None:
        return self.check(step_limit=False)

    def run(self) -> TaskRun:
        port, policy = self.port, self.policy
        duration = float(policy.waypoint_duration_s)
        while True:
            stop = self.check()
            if stop is not None:
                break
            obs = port.observe(self.interrupt)
            if isinstance(obs, Stop):
                stop = obs
                break
            b = time.perf_counter()
            policy.observe(obs.image, obs.joints, obs.t)
            c = time.perf_counter()
            port.planning(self)
            step = policy.plan()
            d = time.perf_counter()
            replan = Replan(index=len(self.replans), observation=obs, step=step, observe_s=c - b, plan_s=d - c)
            self.replans.append(replan)
            port.planned(replan, self)
            stop = self.check()
            if stop is not None:
                break
            port.executing(replan, self)
            for i, waypoint in enumerate(step.waypoints):
                out = port.execute(waypoint, duration, replan, i, self.interrupt)
                replan.ticks += out.ticks
                if out.executed:
                    replan.executed += 1
                stop = out.stop
                if stop is not None:
                    break
            self.ticks += replan.ticks
            self.waypoints += replan.executed
            if replan.executed:
                self.executed_replans += 1
            port.executed(replan, self)
            if stop is not None:
                break
        return TaskRun(stop=stop, replans=self.replans, executed_replans=self.executed_replans,
                       waypoints=self.waypoints, ticks=self.ticks, duration_s=port.clock() - self.t0)


def run_task(port: RobotPort, policy, max_steps: int, max_duration: float | None = None,
             t0: float | None = None) -> TaskRun:
    """Run ``policy`` on the robot behind ``port`` until a stop (see the module doc); ``t0``: the run's start on
    the port's clock (default: now)."""
    return TaskLoop(port, policy, max_steps, max_duration, t0).run()


def step_trace(run: TaskRun) -> list[dict]:
    """The run's step sequence in a port-independent form: per replan its index, planned and executed waypoints,
    then the stop (what the benchmark and the node are compared on)."""
    out = [{"replan": r.index, "planned": int(len(r.step.waypoints)), "executed": r.executed} for r in run.replans]
    return out + [{"stop": run.stop.reason, "message": run.stop.message}]


def finite_or_none(x: Any, nd: int = 5) -> Any:
    if x is None:
        return None
    x = float(x)
    return round(x, nd) if math.isfinite(x) else None
