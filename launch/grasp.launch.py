"""ros2 launch: the DexWM 'grasp' task graph (arguments: backend, goal_image, checkpoint, rviz, record, seed, episode).

  ros2 launch launch/grasp.launch.py backend:=sim seed:=3 rviz:=true

The graph itself is defined once in dexwm_ros.launch_graph.graph.describe (our own starter, `dexwm launch grasp`,
runs the same one without ROS 2's launch packages).
"""

from dexwm_ros.launch_graph.ros_launch import launch_description


def generate_launch_description():
    return launch_description("grasp")
