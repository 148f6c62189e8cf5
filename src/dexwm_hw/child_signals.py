"""Child processes that are stopped with SIGINT must not inherit an ignored SIGINT.

A shell without job control starts background commands (``nohup dexwm launch ... &``, a CI script run with ``&``)
with SIGINT and SIGQUIT ignored, and an ignored signal stays ignored across ``fork`` and ``exec``: a Python child
then never installs its KeyboardInterrupt handler, so the graceful stop (SIGINT) does nothing and every process is
escalated to SIGTERM / SIGKILL. Starters that stop their children with SIGINT pass :func:`default_sigint` as (part
of) ``preexec_fn``.
"""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """In the child before exec: SIGINT back to its default action (the exec'd program then sets its own)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
