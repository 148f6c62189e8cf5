"""Names of the world-model and planner nodes' ROS interfaces (relative: they resolve in the node's namespace)."""

IMAGE_TOPIC = "camera/color/image_raw"
CAMERA_INFO_TOPIC = "camera/color/camera_info"
HAND_KEYPOINTS_TOPIC = "dexwm/hand_keypoints"      # dexwm_interfaces/HandKeypoints of every processed frame
IMAGINED_IMAGE_TOPIC = "dexwm/imagined_image"      # sensor_msgs/Image: decoded predicted frame (with a decoder)
PLAN_STATUS_TOPIC = "dexwm/plan_status"            # dexwm_interfaces/PlanStatus
PLAN_MARKERS_TOPIC = "dexwm/plan_markers"          # visualization_msgs/MarkerArray: the plan's hand keypoints
RUN_TASK_ACTION = "dexwm/run_task"                 # dexwm_interfaces/action/RunTask
SET_GOAL_SERVICE = "dexwm/set_goal_from_camera"    # dexwm_interfaces/srv/SetGoalFromCamera
