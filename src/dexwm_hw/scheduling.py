"""Keep real-time scheduling where it belongs.

Some native libraries raise the calling thread to ``SCHED_FIFO`` whenever the process may: libfranka (the thread that
creates a ``Robot`` or starts a control loop, even with ``RealtimeConfig.kIgnore``) and the SVT-AV1 encoder behind
PyAV's ``libsvtav1``. Every thread and process that thread starts afterwards inherits the policy, and a busy
``SCHED_FIFO`` process owns a core: on a machine without a real-time kernel it starves the simulator, the ROS nodes
and everything else. Callers put their thread back with :func:`normal_scheduling` right after such a call.
"""

from __future__ import annotations

import os


def normal_scheduling() -> bool:
    """Put the calling thread back on ``SCHED_OTHER``; True when it had been changed."""
    if not hasattr(os, "sched_setscheduler") or os.sched_getscheduler(0) == os.SCHED_OTHER:
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True
