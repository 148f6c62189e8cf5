"""ROS 2 adapters of the hardware layer: thin nodes around the simulator and the drivers' message formats.

Only this sub-package imports ``rclpy`` and message types; everything it wraps (``dexwm_hw.sim``) is ROS-free.
"""
