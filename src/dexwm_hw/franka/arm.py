"""Direct libfranka back-end: the Panda / FR3 driven through ``pylibfranka`` (libfranka's official Python bindings)
in a 1 kHz joint-position loop, without ros2_control.

A control thread keeps one joint-position motion running for as long as the arm is started: every cycle it reads
the robot state (``readOnce``, which paces the loop at the robot's 1 kHz) and writes the set-point of the current
move. :meth:`FrankaArm.move` replaces the move with a quintic from the current set-point, set-point velocity and
acceleration to the target, so moves chain without a jump in velocity or acceleration; :meth:`FrankaArm.hold`
brings the arm smoothly to rest. What may be commanded is decided upstream (``dexwm_hw.safety``); this class only
refuses to exceed the hardware's own joint position and speed limits (set-points are clipped, durations stretched).

``realtime="ignore"`` (``RealtimeConfig.kIgnore``) is for franka-sim and machines without a real-time kernel; a
real robot wants ``"enforce"``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from dexwm_hw.safety.motion import QuinticMove
from dexwm_hw.scheduling import normal_scheduling

# Franka Panda datasheet (hardware constants, not tunables): joint limits (rad) and maximum joint speeds (rad/s)
PANDA_JOINT_LOWER = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
PANDA_JOINT_UPPER = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
PANDA_MAX_VELOCITY = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])
_SPEED_MARGIN = 0.9  # moves are stretched to peak at no more than this fraction of the hardware speed
REALTIME_MODES = ("enforce", "ignore")


class FrankaArmError(RuntimeError):
    """Connection failure, or the control loop stopped on a robot error (reflex, network)."""


def import_pylibfranka():
    try:
        import pylibfranka
    except ImportError as exc:
        raise FrankaArmError("the libfranka back-end needs pylibfranka (libfranka's Python bindings): "
                             "run scripts/setup_franka_sim.sh or `pip install pylibfranka`") from exc
    return pylibfranka


@dataclass
class ArmState:
    q: np.ndarray          # measured joint positions, rad
    dq: np.ndarray         # measured joint velocities, rad/s
    q_d: np.ndarray        # the set-point being commanded, rad
    control_time: float    # s of robot time since the control loop started
    wall_time: float       # time.monotonic() of the reading


class FrankaArm:
    def __init__(self, robot_ip: str, realtime: str = "enforce") -> None:
        if realtime not in REALTIME_MODES:
            raise ValueError(f"realtime: expected one of {REALTIME_MODES}, got {realtime!r}")
        if not robot_ip:
            raise ValueError("robot_ip: the robot's FCI address is empty")
        self._pf = import_pylibfranka()
        rt = self._pf.RealtimeConfig.kEnforce if realtime == "enforce" else self._pf.RealtimeConfig.kIgnore
        try:
            self.robot = self._pf.Robot(robot_ip, rt)
            first = self.robot.read_once()
            normal_scheduling()  # libfranka raised the caller's thread; only the control-loop thread needs it
            # (the loop thread keeps the priority libfranka gives it: a 1 kHz loop needs it, and it starts nothing)
        except Exception as exc:  # NetworkException, IncompatibleVersionException, RealtimeException, ...
            raise FrankaArmError(f"cannot connect to the Franka robot at {robot_ip}: {exc}") from exc
        self.robot_ip = robot_ip
        self._lock = threading.Lock()
        q = np.array(first.q, dtype=np.float64)
        self._state = ArmState(q, np.zeros(7), q.copy(), 0.0, time.monotonic())
        self._move: QuinticMove | None = None
        self._move_start: float | None = None  # control time the move started at (None: at the next cycle)
        self._setpoint = q.copy()
        self._setpoint_velocity = np.zeros(7)
        self._setpoint_acceleration = np.zeros(7)
        self._last_t = 0.0  # control time of the last set-point written
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.cycles = 0

    # ---------------------------------------------------------------------------------------------- control
    def start(self) -> None:
        """Start the joint-position loop (holding the current position); recovers from a previous robot error."""
        if self.running:
            return
        if self._error is not None:
            self.robot.automatic_error_recovery()
            self._error = None
        self._stop.clear()
        with self._lock:
            self._move, self._move_start = None, None
        self._thread = threading.Thread(target=self._loop, name="franka-joint-position-loop", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        pf = self._pf
        try:
            control = self.robot.start_joint_position_control(pf.ControllerMode.JointImpedance)
            t = 0.0
            first = True
            while True:
                state, period = control.readOnce()
                t += period.to_sec()
                with self._lock:
                    if first:  # continue from where the robot is commanded to be
                        self._setpoint = np.array(state.q_d, dtype=np.float64)
                        self._setpoint_velocity = np.zeros(7)
                        self._setpoint_acceleration = np.zeros(7)
                        self._last_t = t
                        first = False
                    move = self._move
                    if move is not None:
                        if self._move_start is None:  # a new move starts from the last set-point written
                            self._move_start = self._last_t
                        elapsed = t - self._move_start
                        self._setpoint = np.clip(move.position(elapsed), PANDA_JOINT_LOWER, PANDA_JOINT_UPPER)
                        self._setpoint_velocity = move.velocity(elapsed)
                        self._setpoint_acceleration = move.acceleration(elapsed)
                    self._last_t = t
                    setpoint = self._setpoint.copy()
                    finishing = self._stop.is_set() and (move is None or move.done(t - self._move_start))
                    self._state = ArmState(np.array(state.q), np.array(state.dq), setpoint, t, time.monotonic())
                command = pf.JointPositions(setpoint.tolist())
                if finishing:
                    command.motion_finished = True
                control.writeOnce(command)
                self.cycles += 1
                if finishing:
                    break
        except Exception as exc:  # ControlException (reflex), NetworkException: reported through `error`
            self._error = exc

    def _plan(self, target: np.ndarray, duration: float) -> QuinticMove:
        """A move from the current set-point state (caller holds the lock), stretched to the speed limits."""
        start, v0, a0 = self._setpoint.copy(), self._setpoint_velocity.copy(), self._setpoint_acceleration.copy()
        duration = max(float(duration), 1e-3)
        move = QuinticMove(start, target, duration, v0, a0)
        for _ in range(30):
            ratio = float(np.max(move.peak_speed() / (_SPEED_MARGIN * PANDA_MAX_VELOCITY)))
            if ratio <= 1.0:
                break
            duration *= ratio * 1.05
            move = QuinticMove(start, target, duration, v0, a0)
        return move

    def move(self, target, duration: float) -> float:
        """Reach ``target`` (7 joints, rad; clipped to the hardware limits) in ``duration`` s from the current
        set-point, continuing its velocity. Returns the duration used (stretched if the speed limits need it)."""
        target = np.asarray(target, dtype=np.float64)
        if target.shape != (7,) or not np.all(np.isfinite(target)):
            raise ValueError(f"target: expected 7 finite joint positions, got {target.tolist()}")
        self._require_running()
        target = np.clip(target, PANDA_JOINT_LOWER, PANDA_JOINT_UPPER)
        with self._lock:
            move = self._plan(target, duration)
            self._move, self._move_start = move, None
        return move.duration

    def hold(self, duration: float = 0.2) -> float:
        """Come to rest within about ``duration`` s: decelerate from the current set-point velocity and stop where
        that takes the arm (no jump back). Returns the duration used."""
        self._require_running()
        with self._lock:
            v = self._setpoint_velocity
            stop_at = np.clip(self._setpoint + 0.5 * v * duration, PANDA_JOINT_LOWER, PANDA_JOINT_UPPER)
            move = self._plan(stop_at, duration)
            self._move, self._move_start = move, None
        return move.duration

    def _require_running(self) -> None:
        if self._error is not None:
            raise FrankaArmError(f"the control loop stopped on a robot error: {self._error}")
        if not self.running:
            raise FrankaArmError("the control loop is not running: call start() first")

    # ------------------------------------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        return self._error

    def state(self) -> ArmState:
        """The latest state: from the control loop while it runs, else read from the robot."""
        if self.robot is None:
            raise FrankaArmError("disconnected (close() was called)")
        if not self.running:
            s = self.robot.read_once()
            q = np.array(s.q, dtype=np.float64)
            with self._lock:
                self._state = ArmState(q, np.array(s.dq, dtype=np.float64), np.array(s.q_d, dtype=np.float64),
                                       self._state.control_time, time.monotonic())
        with self._lock:
            return self._state

    def stop(self, timeout: float = 5.0) -> None:
        """Come to rest, end the motion (``motion_finished``) and stop the loop."""
        if self.running:
            if self._error is None:
                self.hold()
            self._stop.set()
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise FrankaArmError(f"the control loop did not finish within {timeout} s")
        self._thread = None

    def close(self) -> None:
        """Stop the loop and disconnect, so that another client (or node) can take the robot."""
        self.stop()
        self.robot = None
