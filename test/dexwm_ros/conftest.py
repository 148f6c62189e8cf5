import sys
from pathlib import Path

# test_recording_node reads the run recordings with the helpers of the planner's recording tests (test_recording)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dexwm_planner"))
