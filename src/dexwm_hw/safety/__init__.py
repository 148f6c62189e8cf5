"""The safety layer between the planner and the robot (no ROS): joint position and velocity limits, the hand's
workspace box (forward kinematics), the watchdog and the e-stop, combined in :class:`SafetySupervisor`."""

from dexwm_hw.safety.limits import JointLimits, LimitCheck
from dexwm_hw.safety.motion import MIN_JERK_PEAK_FACTOR, QuinticMove, min_jerk_duration
from dexwm_hw.safety.supervisor import Command, Decision, SafetySupervisor
from dexwm_hw.safety.workspace import WorkspaceBox

__all__ = ["Command", "Decision", "JointLimits", "LimitCheck", "MIN_JERK_PEAK_FACTOR", "QuinticMove",
           "SafetySupervisor", "WorkspaceBox", "min_jerk_duration"]
