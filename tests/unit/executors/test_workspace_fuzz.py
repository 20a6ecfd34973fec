"""Random paths against workspace resolution: whatever the path, the answer is a file or folder
inside the workspace or an engine error, never a file outside, a write outside, or a crash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_engine.errors import EngineError
from agent_engine.executors.workspace import Workspace

SECRET = b"outside-secret"


def _tree(tmp_path: Path) -> tuple[Workspace, Path]:
    """A workspace with files, folders and symlinks (inward and outward), beside a folder that
    holds a secret."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    root = tmp_path / "workspace"
    (root / "a" / "b").mkdir(parents=True)
    (root / "file.txt").write_bytes(b"inside")
    (root / "a" / "b" / "deep.txt").write_bytes(b"deep")
    (root / "link_out").symlink_to(outside)
    (root / "secret_link").symlink_to(outside / "secret")
    (root / "a" / "link_in").symlink_to(root / "file.txt")
    (root / "a" / "up").symlink_to("..")
    os.mkfifo(root / "fifo")
    return Workspace(root.resolve()), outside


def _components(root: Path, outside: Path) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            [
                "..",
                ".",
                "",
                "a",
                "b",
                "file.txt",
                "deep.txt",
                "link_out",
                "secret_link",
                "link_in",
                "up",
                "fifo",
                "secret",
                "new.txt",
                "x" * 300,
                "\x00",
                "\udcff",
                "é",
                str(root),
                str(outside),
                "/",
                "/etc",
            ]
        ),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
    )


def _inside(root: Path, path: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_paths_stay_inside_the_workspace(tmp_path: Path, data: st.DataObject) -> None:
    # Hypothesis runs every example with the same tmp_path: the tree is laid out once.
    if (tmp_path / "workspace").exists():
        workspace, outside = Workspace((tmp_path / "workspace").resolve()), tmp_path / "outside"
    else:
        workspace, outside = _tree(tmp_path)
    root = workspace.root
    before = _snapshot(outside)
    parts = data.draw(st.lists(_components(root, outside), min_size=1, max_size=5))
    path = data.draw(st.sampled_from(["/".join(parts), "/" + "/".join(parts)]))
    for resolve in (
        workspace.resolve_for_read,
        workspace.resolve_for_write,
        workspace.resolve_for_listing,
    ):
        try:
            resolved = resolve(path)
        except EngineError:
            continue
        assert _inside(root, resolved), (path, resolved)
    try:
        content = workspace.read_bytes(path, 1024)
    except EngineError:
        pass
    else:
        assert content != SECRET, path
    try:
        written = workspace.write_atomic(path, b"written")
    except EngineError:
        pass
    else:
        assert written is not None
    assert _snapshot(outside) == before, path
    assert (outside / "secret").read_bytes() == SECRET


@pytest.mark.parametrize("path", ["link_out/secret", "secret_link", "a/up/link_out/secret"])
def test_links_out_of_the_workspace_are_refused(tmp_path: Path, path: str) -> None:
    workspace, _ = _tree(tmp_path)
    with pytest.raises(EngineError):
        workspace.read_bytes(path, 1024)
