"""Recordings of MPC runs for offline viewing (rerun ``.rrd`` files; no ROS): :class:`RunRecording`.

Importing this package does not import rerun; creating a :class:`RunRecording` does."""

from dexwm_planner.recording.imagined import decoder_mismatch, fitting_decoder
from dexwm_planner.recording.run_recording import RunRecording, default_blueprint

__all__ = ["RunRecording", "decoder_mismatch", "default_blueprint", "fitting_decoder"]
