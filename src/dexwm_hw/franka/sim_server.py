"""Run franka-sim's FCI server bound to one address (its CLI binds every interface), headless, arm only.

Runs inside the franka-sim venv (numpy 1.26), so it imports nothing from this project:
    .venv-franka-sim/bin/python src/dexwm_hw/franka/sim_server.py --host 127.0.0.1 --model panda_nohand.xml
``--model`` becomes ``$FR3_MJCF`` (franka-sim otherwise downloads an FR3 model on first use). Stops on SIGINT or
SIGTERM. Started and stopped by :class:`dexwm_hw.franka.sim.FrankaSimProcess`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--model", required=True, help="MuJoCo arm model (MJCF) to simulate, e.g. panda_nohand.xml")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.model):
        print(f"sim_server: --model {args.model}: no such file", file=sys.stderr)
        return 2
    os.environ["FR3_MJCF"] = os.path.abspath(args.model)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from franka_sim.franka_sim_server import FrankaSimServer

    server = FrankaSimServer(host=args.host, enable_gripper=False, enable_vis=False)

    def on_signal(signum, _frame) -> None:
        raise KeyboardInterrupt  # the physics loop runs in this (main) thread: unwind it like Ctrl+C

    signal.signal(signal.SIGTERM, on_signal)
    print(f"franka-sim serving {args.model} on {args.host}", flush=True)
    try:
        server.start()  # blocks until stopped
    except KeyboardInterrupt:
        print("franka-sim stopping", flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
