"""Pinning a test to one backend: for tests where the other one would prove nothing more."""

from __future__ import annotations

from typing import Literal

import pytest

Backend = Literal["sqlite", "postgres"]


def one_backend(backend: Backend, why: str) -> pytest.MarkDecorator:
    """Run the test on ``backend`` alone; ``why`` says why the other backend proves nothing more.

    The test's own parametrisation of ``database_url`` replaces the fixture's two (pytest's
    documented override), so no database of the other backend is made, and the test keeps its id
    (``[sqlite]`` or ``[postgres]``). ``why`` stays on the test as its ``one_backend`` mark.
    """
    marks = [pytest.mark.one_backend(why)]
    if backend == "postgres":
        marks.append(pytest.mark.postgres)
    return pytest.mark.parametrize(
        "database_url", [pytest.param(backend, marks=marks)], indirect=True
    )
