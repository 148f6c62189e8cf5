import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOG_DIR", str(Path(__file__).resolve().parents[1] / "log" / "ros"))


@pytest.fixture(autouse=True)
def normal_scheduler_after_each_test():
    """No test may leave pytest's thread on a real-time scheduler: every process and thread started afterwards
    would inherit it and could starve the machine (libfranka raises the thread that starts a control loop to
    SCHED_FIFO 99). The test that did it fails here, and the scheduler is put back for the tests after it."""
    yield
    from dexwm_hw.scheduling import normal_scheduling

    if normal_scheduling():
        pytest.fail("this test left pytest's thread on a real-time scheduler (put back to SCHED_OTHER now)")


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (small models: one thread is faster and gives stable sums), restored after.
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
