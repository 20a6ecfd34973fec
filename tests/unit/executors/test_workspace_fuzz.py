"""Random paths against workspace resolution: each resolves inside the workspace or is refused
with a clear error (a workspace violation or an executor error), never any other exception."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_engine.errors import ExecutorError, WorkspaceViolationError
from agent_engine.executors.workspace import Workspace

NAMES = [
    "..",
    ".",
    "",
    "a",
    "dir",
    "file.txt",
    "link_in",
    "link_out",
    "link_abs_out",
    "link_up",
    "loop",
    "hard",
    "fifo",
    "ünïcødé",
    "x" * 300,
    "nul\x00byte",
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path]:
    base = tmp_path_factory.mktemp("fuzz").resolve()
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    root = base / "roots" / "ws"
    (root / "dir").mkdir(parents=True)
    (root / "file.txt").write_text("inside")
    (root / "dir" / "file.txt").write_text("inside")
    (root / "link_in").symlink_to("dir")
    (root / "dir" / "link_up").symlink_to("..")
    (root / "link_out").symlink_to("../../outside")
    (root / "link_abs_out").symlink_to(outside / "secret")
    (root / "loop").symlink_to("loop")
    (root / "ünïcødé").write_text("inside")
    os.link(outside / "secret", root / "hard")
    os.mkfifo(root / "fifo")
    return Workspace(root, base=base / "roots"), outside


component = st.one_of(st.sampled_from(NAMES), st.text(min_size=1, max_size=12))
paths = st.one_of(
    st.lists(component, min_size=1, max_size=8).map("/".join),
    st.lists(component, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
    st.text(max_size=40),
    st.just("x/" * 2100),
)


def _inside(root: Path, found: Path) -> bool:
    real = Path(os.path.realpath(found))
    return real == root or real.is_relative_to(root)


@settings(max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.one_of(paths, st.builds(lambda p: "{root}/" + p, paths)))
def test_random_paths_resolve_inside_or_are_refused_clearly(
    tree: tuple[Workspace, Path], path: str
) -> None:
    workspace, outside = tree
    path = path.replace("{root}", str(workspace.root))
    for operation in (
        workspace.resolve_for_read,
        workspace.resolve_for_write,
        workspace.resolve_for_listing,
        lambda p: workspace.read_bytes(p, 1 << 16),
        workspace.stat,
    ):
        try:
            found = operation(path)
        except (WorkspaceViolationError, ExecutorError):
            continue
        if isinstance(found, Path):
            assert _inside(workspace.root, found), (path, found)
        elif isinstance(found, bytes):
            assert found == b"inside", (path, found)
    assert (outside / "secret").read_text() == "secret"
