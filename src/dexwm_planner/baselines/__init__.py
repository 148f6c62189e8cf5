"""Learned baselines the world-model planner is compared with in the same closed-loop harness (no ROS)."""
