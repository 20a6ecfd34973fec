"""Crash points for recovery tests: ``AGENT_ENGINE_FAULT_CRASH=<point>[:<step_type>]`` makes the
process kill itself with SIGKILL at that point, exactly like ``kill -9`` at the worst moment.

Points: ``before_effect`` (intent committed, effect not started) and ``after_effect`` (effect
done, outcome not recorded). Unset in production; reading one variable costs nothing measurable.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "AGENT_ENGINE_FAULT_CRASH"


def crash_point(point: str, step_type: str) -> None:
    """Die here if the fault variable names this point (and this step type, when it names one)."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    name, _, only_type = wanted.partition(":")
    if name == point and (not only_type or only_type == step_type):
        os.kill(os.getpid(), signal.SIGKILL)
