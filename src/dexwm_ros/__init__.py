"""The ROS 2 adapters, the top layer below the ``dexwm`` command: every node, the launch graph and the bag tools.

Only this package imports ``rclpy``, ``launch`` and message types; everything it wraps (``dexwm_planner``,
``dexwm_hw``, ``dexwm_model``, ``dexwm_robot``) is ROS-free. Node plumbing shared by all nodes: ``node_runner`` (the
one ``main``), ``exit_codes``, ``controller_common`` (topics, QoS, parameter checks), ``conversions`` and ``images``
(messages <-> arrays), ``node_process`` + ``graph_probe`` (drive a small graph from a script or a test).
"""
