"""The one ``main`` of our single-executor nodes: init, spin until Ctrl-C or shutdown, exit 2 on bad parameters."""

from __future__ import annotations

import sys
from typing import Callable

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from dexwm_model.config import ConfigError

EXIT_PARAMETERS = 2


def run_node(make_node: Callable[[], Node], program: str, args: list[str] | None = None) -> int:
    """Build the node with ``make_node`` and spin it; a node's optional ``close()`` runs before it is destroyed.

    A configuration or parameter error is printed as ``program: message`` and gives exit code 2."""
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ConfigError, ParameterException) as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return EXIT_PARAMETERS
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if callable(close):
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
