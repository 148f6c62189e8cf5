"""Exit codes of our nodes (no ROS import: the launch graph reads them too).

0 clean stop or a start-up task that succeeded; 1 cannot run (no device, missing or damaged checkpoint) or an
unhandled error; 2 bad parameters; 3 a start-up task that ran and did not succeed (not a fault of the node)."""

EXIT_CANNOT_RUN = 1
EXIT_PARAMETERS = 2
EXIT_TASK_FAILED = 3
