"""The task runner's rules on a scripted port: check order, what max_steps counts, the last replan executed in full,
a stop from the port inside a waypoint, a stop that comes while planning, the step trace."""

import numpy as np
import pytest

from dexwm_planner.tasks.runner import Executed, Observation, Stop, run_task, step_trace


class Step:
    def __init__(self, n):
        self.waypoints = [np.full(3, float(k)) for k in range(n)]


class Policy:
    waypoint_duration_s = 0.2

    def __init__(self, n_waypoints=1):
        self.n, self.observed = n_waypoints, []

    def observe(self, image, joints, t):
        self.observed.append(t)

    def plan(self):
        return Step(self.n)


class Port:
    """``rejects``: waypoint calls (0-based, over the run) the robot refuses; ``succeed_after``: executed waypoints
    after which the success test holds; ``stop_at``: (hook, call) where the port's own stop appears."""

    def __init__(self, rejects=(), succeed_after=None, stop_at=None):
        self.rejects, self.succeed_after, self.stop_at = set(rejects), succeed_after, stop_at
        self.calls, self.executed_waypoints, self.log, self.t = 0, 0, [], 0.0
        self.stop = None

    def clock(self):
        return self.t

    def stop_reason(self):
        return self.stop

    def succeeded(self):
        return self.succeed_after is not None and self.executed_waypoints >= self.succeed_after

    def observe(self, interrupt):
        self.log.append("observe")
        return Observation(image=np.zeros((2, 2, 3), np.uint8), joints=np.zeros(3), t=self.t)

    def planning(self, loop):
        self.log.append("planning")

    def planned(self, replan, loop):
        self.log.append("planned")
        if self.stop_at == ("planned", replan.index):
            self.stop = Stop("CANCELED", "canceled by the client")

    def executing(self, replan, loop):
        self.log.append("executing")

    def execute(self, waypoint, duration, replan, i, interrupt):
        k, self.calls = self.calls, self.calls + 1
        self.t += duration
        # the interrupt a port polls while it waits never carries the step limit
        stop = interrupt()
        assert stop is None or "max_steps" not in stop.message
        if k in self.rejects:
            return Executed(executed=False)
        self.executed_waypoints += 1
        if self.stop_at == ("execute", k):
            return Executed(executed=True, ticks=100, stop=Stop("ESTOP", "safety layer: e-stop"))
        return Executed(executed=True, ticks=100)

    def executed(self, replan, loop):
        self.log.append("executed")


def test_max_steps_counts_replans_with_executed_waypoints_and_the_last_runs_in_full():
    port, policy = Port(), Policy(n_waypoints=2)
    run = run_task(port, policy, max_steps=3)
    assert run.stop == Stop("TIMEOUT", "max_steps (3) reached")
    assert (len(run.replans), run.executed_replans, run.waypoints, run.ticks) == (3, 3, 6, 600)
    assert [r.executed for r in run.replans] == [2, 2, 2]  # every waypoint of the last replan too
    assert port.log[:5] == ["observe", "planning", "planned", "executing", "executed"]
    assert step_trace(run) == [{"replan": i, "planned": 2, "executed": 2} for i in range(3)] + [
        {"stop": "TIMEOUT", "message": "max_steps (3) reached"}]


def test_a_refused_waypoint_does_not_count_as_a_step():
    run = run_task(Port(rejects={1}), Policy(), max_steps=3)
    assert [r.executed for r in run.replans] == [1, 0, 1, 1]
    assert run.executed_replans == 3 and run.stop.reason == "TIMEOUT"


def test_success_is_checked_between_replans_before_the_step_limit():
    run = run_task(Port(succeed_after=2), Policy(n_waypoints=3), max_steps=1)
    # the success test held after the first replan's waypoints: success, not the step limit
    assert run.stop == Stop("SUCCEEDED") and len(run.replans) == 1 and run.waypoints == 3


def test_the_ports_stop_ends_the_run_inside_a_replan_or_before_execution():
    run = run_task(Port(stop_at=("execute", 0)), Policy(n_waypoints=2), max_steps=5)
    assert run.stop == Stop("ESTOP", "safety layer: e-stop") and [r.executed for r in run.replans] == [1]
    port = Port(stop_at=("planned", 1))
    run = run_task(port, Policy(), max_steps=5)
    assert run.stop.reason == "CANCELED" and [r.executed for r in run.replans] == [1, 0]
    assert port.log[-2:] == ["planning", "planned"]  # planned, never executed


def test_max_duration_counts_on_the_ports_clock_from_t0():
    run = run_task(Port(), Policy(), max_steps=100, max_duration=0.5)
    assert run.stop == Stop("TIMEOUT", "max_duration (0.5 s) reached") and len(run.replans) == 3
    run = run_task(Port(), Policy(), max_steps=100, max_duration=0.5, t0=-0.45)
    assert len(run.replans) == 1


@pytest.mark.parametrize("max_steps", [0, -1, 1.5, True])
def test_bad_max_steps_are_refused(max_steps):
    with pytest.raises(ValueError, match="max_steps: expected a positive integer"):
        run_task(Port(), Policy(), max_steps=max_steps)
