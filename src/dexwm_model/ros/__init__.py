"""ROS 2 adapters of the world model: ``dexwm_world_model_node`` and the HandKeypoints message helpers."""
