"""Direct libfranka path to the Franka arm (``pylibfranka``), and franka-sim for running it without a robot."""
