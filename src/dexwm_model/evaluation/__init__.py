"""Evaluation of the world model: open-loop rollouts against recorded episodes (``dexwm eval``)."""

from dexwm_model.evaluation.open_loop import EVAL_FORMAT, evaluate, plan_episode, read_keypoints
from dexwm_model.evaluation.report import write_report

__all__ = ["EVAL_FORMAT", "evaluate", "plan_episode", "read_keypoints", "write_report"]
