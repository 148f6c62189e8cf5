"""The one place that decides whether a waypoint reaches the robot (pure logic, no ROS; times are passed in).

Inputs: joint states, camera frames (only their arrival), waypoints (23 joints + duration + stamp), e-stop
requests, and the clock (``tick``). Outputs: approved moves and hold commands (:class:`Command`) for the arm and
hand controllers, and a status report.

States, highest priority first:
  ESTOP               software e-stop engaged (latched until released)          refuses waypoints, holds
  CONTROLLER_TIMEOUT  /joint_states missing a joint for > joint_states_timeout   refuses waypoints, holds
  CAMERA_TIMEOUT      no camera frame for > image_timeout                       refuses waypoints, holds
  WAITING             no joint state (or no camera frame) received yet          refuses waypoints
  STALE_WAYPOINTS     a stale waypoint arrived, or the stream stopped while     holds; a fresh waypoint resumes
                      a move was under way (dead-man's switch)
  READY               accepting waypoints
A hold is sent once, on entering a holding state: every joint is commanded to its last measured position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dexwm_hw.safety.limits import JointLimits
from dexwm_hw.safety.workspace import WorkspaceBox

READY = "READY"
WAITING = "WAITING"
ESTOP = "ESTOP"
CONTROLLER_TIMEOUT = "CONTROLLER_TIMEOUT"
CAMERA_TIMEOUT = "CAMERA_TIMEOUT"
STALE_WAYPOINTS = "STALE_WAYPOINTS"
HOLDING_STATES = (ESTOP, CONTROLLER_TIMEOUT, CAMERA_TIMEOUT, STALE_WAYPOINTS)
REFUSING_STATES = (ESTOP, CONTROLLER_TIMEOUT, CAMERA_TIMEOUT, WAITING)


@dataclass
class Command:
    """What the controllers execute: reach ``positions`` (23, project order) in ``duration`` s from now."""

    positions: np.ndarray
    duration: float
    hold: bool          # True for a hold (stop where the robot is), False for an approved waypoint
    reason: str         # why (the hold's cause, or "waypoint")


@dataclass
class Decision:
    accepted: bool
    reason: str                       # rejection reason, or a note on what was adjusted ("" when nothing was)
    command: Command | None = None    # the approved move, or a hold caused by this waypoint (stale), or None


@dataclass
class _Stream:
    last: float = -math.inf
    seen: bool = False

    def mark(self, now: float) -> None:
        self.last, self.seen = now, True

    def age(self, now: float) -> float:
        return now - self.last if self.seen else math.inf


@dataclass
class _Counters:
    accepted: int = 0
    rejected: int = 0
    holds: int = 0
    stretched: int = 0
    clipped: int = 0


class SafetySupervisor:
    def __init__(self, joint_names: Sequence[str], limits: JointLimits, workspace: WorkspaceBox | None, *,
                 joint_states_timeout: float, image_timeout: float, waypoint_timeout: float,
                 max_waypoint_age: float, hold_duration: float) -> None:
        self.joint_names = tuple(joint_names)
        if limits.names != self.joint_names:
            raise ValueError(f"limits are for joints {list(limits.names)}, the supervisor for {list(self.joint_names)}")
        self._index = {n: i for i, n in enumerate(self.joint_names)}
        self.limits = limits
        self.workspace = workspace
        self.joint_states_timeout = float(joint_states_timeout)
        self.image_timeout = float(image_timeout)
        self.waypoint_timeout = float(waypoint_timeout)
        self.max_waypoint_age = float(max_waypoint_age)
        self.hold_duration = float(hold_duration)
        n = len(self.joint_names)
        self._q = np.full(n, np.nan)
        self._q_time = np.full(n, -math.inf)
        self._image = _Stream()
        self._waypoint = _Stream()
        self._move_end = -math.inf         # when the last approved move is due to end
        self._stale_reason: str | None = None
        self._estop_reason: str | None = None
        self._state = WAITING
        self._state_reason = "no joint state received yet"
        self._last_rejection: tuple[float, str] | None = None
        self._last_accepted: dict | None = None
        self._last_hold: tuple[float, str] | None = None
        self.counters = _Counters()

    # ------------------------------------------------------------------------------------------------ inputs
    def on_joint_state(self, names: Sequence[str], positions: Sequence[float], now: float) -> None:
        """Record measured positions; names outside the 23 are ignored (other joints on a shared topic)."""
        if len(names) != len(positions):
            raise ValueError(f"JointState: {len(names)} names but {len(positions)} positions")
        for name, value in zip(names, positions):
            i = self._index.get(name)
            if i is not None and math.isfinite(value):
                self._q[i] = value
                self._q_time[i] = now

    def on_image(self, now: float) -> None:
        self._image.mark(now)

    @property
    def measured(self) -> np.ndarray:
        """Last measured joint positions (NaN for a joint never heard of)."""
        return self._q.copy()

    def joints_age(self, now: float) -> float:
        """Age of the oldest joint's latest measurement (inf if a joint was never measured)."""
        return float(now - self._q_time.min())

    # ------------------------------------------------------------------------------------------------ state
    def _condition(self, now: float) -> tuple[str, str]:
        if self._estop_reason is not None:
            return ESTOP, f"e-stop engaged: {self._estop_reason}"
        never = [self.joint_names[i] for i in np.flatnonzero(~np.isfinite(self._q_time))]
        if len(never) == len(self.joint_names):
            return WAITING, "no joint state received yet"
        if never:
            return WAITING, f"no joint state received yet for {', '.join(never)}"
        age = self.joints_age(now)
        if age > self.joint_states_timeout:
            stale = [self.joint_names[i] for i in np.flatnonzero(now - self._q_time > self.joint_states_timeout)]
            joints = ", ".join(stale) if len(stale) < len(self.joint_names) else "all joints"
            return CONTROLLER_TIMEOUT, (f"/joint_states silent for {age:.2f} s (> {self.joint_states_timeout:g} s) "
                                        f"for {joints}")
        if self.image_timeout > 0:
            if not self._image.seen:
                return WAITING, "no camera image received yet"
            if self._image.age(now) > self.image_timeout:
                return CAMERA_TIMEOUT, (f"no camera image for {self._image.age(now):.2f} s "
                                        f"(> {self.image_timeout:g} s)")
        if self._stale_reason is None and self.waypoint_timeout > 0 and now < self._move_end:
            silence = self._waypoint.age(now)
            if silence > self.waypoint_timeout:
                self._stale_reason = (f"waypoint stream silent for {silence:.2f} s (> {self.waypoint_timeout:g} s) "
                                      "while a move was under way")
        if self._stale_reason is not None:
            return STALE_WAYPOINTS, self._stale_reason
        return READY, ""

    def _update(self, now: float) -> Command | None:
        """Re-evaluate the state; a hold command when a holding state is entered."""
        state, reason = self._condition(now)
        previous = self._state
        self._state, self._state_reason = state, reason
        entering_hold = state in HOLDING_STATES and (previous not in HOLDING_STATES or
                                                     (state == ESTOP and previous != ESTOP))
        if not entering_hold:
            return None
        self._move_end = -math.inf  # the running move is cancelled by the hold
        if state != STALE_WAYPOINTS:
            self._stale_reason = None  # a stronger cause holds the robot; the stream starts afresh afterwards
        if not np.all(np.isfinite(self._q)):
            return None  # nothing was ever commanded through us without a full joint state
        self.counters.holds += 1
        self._last_hold = (now, reason)
        return Command(self._q.copy(), self.hold_duration, True, reason)

    def tick(self, now: float) -> Command | None:
        """Run the watchdog; returns a hold command when the robot must be stopped now."""
        return self._update(now)

    @property
    def state(self) -> str:
        return self._state

    @property
    def accepting(self) -> bool:
        return self._state not in REFUSING_STATES

    # -------------------------------------------------------------------------------------------- waypoints
    def reject(self, reason: str, now: float) -> Decision:
        """Record a waypoint refused before it reached :meth:`on_waypoint` (e.g. a malformed message)."""
        return self._reject(now, reason)

    def _reject(self, now: float, reason: str, command: Command | None = None) -> Decision:
        self.counters.rejected += 1
        self._last_rejection = (now, reason)
        return Decision(False, reason, command)

    def on_waypoint(self, names: Sequence[str], positions: Sequence[float], time_from_start: float,
                    stamp: float | None, now: float) -> Decision:
        """Decide on one 23-joint waypoint. ``stamp`` None (a zero header stamp) skips the age check."""
        hold = self._update(now)
        if hold is not None:  # the watchdog fired before this waypoint: stop first, then refuse it
            return self._reject(now, f"refused: {self._state_reason}", hold)
        if not self.accepting:
            return self._reject(now, f"refused: {self._state_reason}")
        names = list(names)
        missing = [n for n in self.joint_names if n not in names]
        unknown = [n for n in names if n not in self._index]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if missing or unknown or repeated or len(names) != len(positions):
            problems = []
            if missing:
                problems.append(f"missing joint(s) {missing}")
            if unknown:
                problems.append(f"unknown joint(s) {unknown}")
            if repeated:
                problems.append(f"repeated joint(s) {repeated}")
            if len(names) != len(positions):
                problems.append(f"{len(names)} joint names but {len(positions)} positions")
            return self._reject(now, "malformed waypoint: " + "; ".join(problems)
                                + f"; expected the {len(self.joint_names)} joints {list(self.joint_names)}")
        target = np.empty(len(self.joint_names))
        for name, value in zip(names, positions):
            target[self._index[name]] = float(value)
        if not math.isfinite(time_from_start) or time_from_start < 0:
            return self._reject(now, f"malformed waypoint: time_from_start must be a finite number >= 0, "
                                     f"got {time_from_start}")
        if stamp is not None and self.max_waypoint_age > 0:
            age = now - stamp
            if age > self.max_waypoint_age or age < -self.max_waypoint_age:
                what = (f"stale waypoint: stamped {age:.2f} s ago (> {self.max_waypoint_age:g} s)" if age > 0 else
                        f"waypoint stamped {-age:.2f} s in the future (clock mismatch > {self.max_waypoint_age:g} s)")
                self._stale_reason = what
                return self._reject(now, what, self._update(now))
        check = self.limits.check_positions(target)
        if check.rejection is not None:
            return self._reject(now, check.rejection)
        start = self._q.copy()
        if self.workspace is not None:
            problem = self.workspace.check_path(start, check.target)
            if problem is not None:
                return self._reject(now, problem)
        duration, stretched = self.limits.safe_duration(start, check.target, time_from_start)
        notes = []
        if check.clipped:
            notes.append(f"clipped into the limits (within tolerance): {', '.join(check.clipped)}")
            self.counters.clipped += 1
        if stretched:
            notes.append(f"duration stretched from {time_from_start:.3f} s to {duration:.3f} s (velocity limits)")
            self.counters.stretched += 1
        # a fresh, valid waypoint: the stream is alive again
        self._stale_reason = None
        self._waypoint.mark(now)
        self._move_end = now + duration
        self._update(now)
        self.counters.accepted += 1
        note = "; ".join(notes)
        self._last_accepted = {"time": now, "duration": duration, "requested": float(time_from_start),
                               "stretched": stretched, "clipped": check.clipped, "note": note}
        return Decision(True, note, Command(check.target, duration, False, "waypoint"))

    # ----------------------------------------------------------------------------------------------- e-stop
    def engage_estop(self, reason: str, now: float) -> tuple[str, Command | None]:
        """Engage (or re-engage with a new reason) the latched stop; returns a message and the hold to send."""
        reason = reason.strip() or "no reason given"
        was = self._estop_reason is not None
        self._estop_reason = reason
        hold = self._update(now)
        return (f"e-stop {'already engaged, reason updated' if was else 'engaged'}: {reason}"), hold

    def release_estop(self, reason: str, now: float) -> tuple[bool, str]:
        """Release the stop unless the controller is silent; the robot stays where it is until a new waypoint."""
        if self._estop_reason is None:
            return True, "e-stop was not engaged"
        age = self.joints_age(now)
        if age > self.joint_states_timeout:
            return False, (f"release refused: /joint_states silent for {age:.2f} s (> {self.joint_states_timeout:g}"
                           " s); the controller must be reporting before the stop can be released")
        self._estop_reason = None
        self._stale_reason = None
        self._move_end = -math.inf
        self._update(now)
        note = f" ({reason.strip()})" if reason.strip() else ""
        return True, f"e-stop released{note}; state {self._state}"

    @property
    def estop_engaged(self) -> bool:
        return self._estop_reason is not None

    # ----------------------------------------------------------------------------------------------- status
    def status(self, now: float) -> dict:
        def age(t: float) -> float | None:
            return None if not math.isfinite(t) else round(now - t, 4)

        return {
            "state": self._state,
            "accepting": self.accepting,
            "reason": self._state_reason,
            "estop": {"engaged": self.estop_engaged, "reason": self._estop_reason or ""},
            "moving": now < self._move_end,
            "last_rejection": None if self._last_rejection is None else
            {"reason": self._last_rejection[1], "age": age(self._last_rejection[0])},
            "last_accepted": None if self._last_accepted is None else
            {k: v for k, v in self._last_accepted.items() if k != "time"} | {"age": age(self._last_accepted["time"])},
            "last_hold": None if self._last_hold is None else
            {"reason": self._last_hold[1], "age": age(self._last_hold[0])},
            "ages": {"joint_states": age(float(self._q_time.min())) if np.all(np.isfinite(self._q_time)) else None,
                     "image": age(self._image.last), "waypoint": age(self._waypoint.last)},
            "counts": {"accepted": self.counters.accepted, "rejected": self.counters.rejected,
                       "holds": self.counters.holds, "stretched": self.counters.stretched,
                       "clipped": self.counters.clipped},
        }
