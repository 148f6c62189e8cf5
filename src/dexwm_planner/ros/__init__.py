"""ROS 2 adapters of the planner: ``dexwm_planner_node`` (the RunTask action server around GoalImageMPC)."""
