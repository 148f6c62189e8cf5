"""Bags: recording the run's topics into rosbag2 (MCAP) and replaying them.

``typestore`` (the types a bag holds, ours included), ``writing`` (:class:`BagWriter`), ``reading``
(:class:`BagReader`) import no ROS; ``ros_qos`` and ``replay`` (:class:`BagReplayer`) are the ROS side (rclpy).
The recorder node is :mod:`dexwm_ros.recorder_node`; ``make_test_bag`` regenerates the committed test bag.
"""
