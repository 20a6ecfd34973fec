"""Escape attempts against workspace confinement: every one must fail closed, touching nothing.

Cases that point at real system files (``/etc/passwd``, ``/dev/null``) are only read, never
written: the suite may run as root and a confinement bug must not be able to damage the host.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent_engine.errors import ExecutorError, WorkspaceViolationError
from agent_engine.executors.base import ExecutorContext
from agent_engine.executors.edit_file import EDIT_FILE
from agent_engine.executors.list_files import LIST_FILES
from agent_engine.executors.read_file import READ_FILE
from agent_engine.executors.run_command import RUN_COMMAND
from agent_engine.executors.workspace import Workspace
from agent_engine.executors.workspace_roots import check_workspace_root

Setup = Callable[[Path, Path], str]


@dataclass(frozen=True)
class Escape:
    name: str
    setup: Setup
    writable: bool = True  # False: aims at a real system file, so only read attempts are made


def _path(value: str) -> Setup:
    return lambda root, outside: value.format(root=root, outside=outside)


def _link(name: str, target: str, path: str | None = None) -> Setup:
    """Create ``root/name`` -> ``target`` (formatted with root/outside); attack ``path``."""

    def setup(root: Path, outside: Path) -> str:
        link = root / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target.format(root=root, outside=outside))
        return path or name

    return setup


def _links(*pairs: tuple[str, str], path: str) -> Setup:
    def setup(root: Path, outside: Path) -> str:
        for name, target in pairs:
            (root / name).symlink_to(target.format(root=root, outside=outside))
        return path

    return setup


def _fifo(root: Path, outside: Path) -> str:
    os.mkfifo(root / "fifo")
    return "fifo"


def _fifo_outside(root: Path, outside: Path) -> str:
    os.mkfifo(outside / "fifo")
    (root / "fifolink").symlink_to(outside / "fifo")
    return "fifolink"


def _socket(root: Path, outside: Path) -> str:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    os.chdir(root)  # AF_UNIX paths are limited to ~108 bytes; bind relative to stay short
    try:
        server.bind("sock")
    finally:
        os.chdir(cwd)
        server.close()
    return "sock"


def _device(root: Path, outside: Path) -> str:
    try:
        os.mknod(root / "devnull", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating device nodes needs CAP_MKNOD")
    return "devnull"


LONG = "a" * 256
ESCAPES = [
    # lexical '..' escapes, including ones that look harmless at first glance
    Escape("dotdot", _path("..")),
    Escape("dotdot-secret", _path("../outside/secret.txt")),
    Escape("dotdot-twice", _path("../../etc/passwd"), writable=False),
    Escape("a-dotdot-dotdot-x", _path("a/../../x")),
    Escape("sub-up-up", _path("sub/../../outside/secret.txt")),
    Escape("dot-dotdot", _path("./../outside/secret.txt")),
    Escape("dotdot-double-slash", _path("..//..//etc/passwd"), writable=False),
    Escape("sub-dot-up-up", _path("sub/./../..")),
    Escape("zigzag", _path("sub/../sub/../../x")),
    Escape("inside-dotdot", _path("sub/..")),
    Escape("trailing-dotdot", _path("sub/file.txt/..")),
    # absolute paths
    Escape("abs-etc-passwd", _path("/etc/passwd"), writable=False),
    Escape("abs-slash", _path("/")),
    Escape("abs-double-slash", _path("//etc/passwd"), writable=False),
    Escape("abs-outside", _path("{outside}/secret.txt")),
    Escape("abs-root-dotdot", _path("{root}/../outside/secret.txt")),
    Escape("abs-root-prefix-sibling", _path("{root}x/secret.txt")),
    Escape("abs-proc", _path("/proc/self/environ"), writable=False),
    # malformed names
    Escape("nul", _path("\x00")),
    Escape("nul-suffix", _path("file.txt\x00.png")),
    Escape("nul-middle", _path("sub/\x00/x")),
    Escape("empty", _path("")),
    Escape("long-component", _path(LONG)),
    Escape("long-component-deep", _path("sub/" + LONG + "/x")),
    Escape("long-path", _path("a/" * 2100)),
    Escape("lone-surrogate", _path("bad-\ud800-name")),
    # symlinks leaving the root, at every position
    Escape("link-file-outside", _link("link", "{outside}/secret.txt")),
    Escape("link-dir-outside", _link("linkdir", "{outside}", "linkdir/secret.txt")),
    Escape("link-etc-passwd", _link("passwd", "/etc/passwd"), writable=False),
    Escape("link-etc-dir", _link("etc", "/etc", "etc/passwd"), writable=False),
    Escape("link-dangling-outside", _link("dangling", "{outside}/nope")),
    Escape("link-relative-up", _link("rel", "../outside/secret.txt")),
    Escape("link-nested-up-up", _link("sub/up", "../..", "sub/up/outside/secret.txt")),
    Escape("link-deep-component", _link("a/b/c", "{outside}", "a/b/c/secret.txt")),
    Escape("link-first-of-missing", _link("x", "{outside}", "x/y/z")),
    Escape("link-parent-new-file", _link("parentlink", "{outside}", "parentlink/new.txt")),
    Escape("link-to-dotdot", _link("parent", "..", "parent/outside/secret.txt")),
    Escape("link-to-slash", _link("slash", "/", "slash/etc/passwd"), writable=False),
    Escape("link-root-prefix-sibling", _link("tricky", "{root}x/secret.txt")),
    Escape("link-abs-through-root", _link("abs", "{root}/../outside/secret.txt")),
    Escape(
        "link-chain",
        _links(("l1", "l2"), ("l2", "l3"), ("l3", "{outside}/secret.txt"), path="l1"),
    ),
    Escape("link-loop", _links(("loop1", "loop2"), ("loop2", "loop1"), path="loop1")),
    Escape("link-self-loop", _link("self", "self")),
    Escape("link-dev-null", _link("null", "/dev/null"), writable=False),
    Escape("link-dev-zero", _link("zero", "/dev/zero"), writable=False),
    Escape("link-proc-environ", _link("environ", "/proc/self/environ"), writable=False),
    # special files inside the root
    Escape("fifo", _fifo),
    Escape("fifo-outside-via-link", _fifo_outside),
    Escape("socket", _socket),
    Escape("char-device", _device),
]


def _snapshot(directory: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every entry under ``directory`` with its content (files) and mtime, links unfollowed."""
    result: dict[str, tuple[bytes | None, int]] = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
        result[str(path.relative_to(directory))] = (content, st.st_mtime_ns)
    return result


@pytest.fixture
def guarded_outside(outside: Path) -> Iterator[Path]:
    """The outside directory, checked after the test to be exactly as it was before it."""
    (outside / "sub").mkdir()
    before = _snapshot(outside)
    yield outside
    assert _snapshot(outside) == before


@pytest.fixture
def populated(root: Path) -> Path:
    (root / "sub").mkdir()
    (root / "sub" / "file.txt").write_text("inside\n")
    (root.parent / f"{root.name}x").mkdir()
    (root.parent / f"{root.name}x" / "secret.txt").write_text("SIBLING SECRET\n")
    return root


def test_corpus_is_large_enough() -> None:
    assert len(ESCAPES) >= 40
    assert len({case.name for case in ESCAPES}) == len(ESCAPES)


@pytest.mark.parametrize("case", ESCAPES, ids=lambda case: case.name)
async def test_escape_fails_closed(
    case: Escape, populated: Path, outside: Path, context: ExecutorContext
) -> None:
    path = case.setup(populated, outside)
    workspace = Workspace(populated)
    sibling = populated.parent / f"{populated.name}x"
    before = _snapshot(outside), _snapshot(sibling)

    with pytest.raises(WorkspaceViolationError) as refused:
        workspace.read_bytes(path, 1 << 20)
    assert refused.value.data["reason"]
    assert "path" in refused.value.data
    with pytest.raises(WorkspaceViolationError):
        workspace.stat(path)
    with pytest.raises(WorkspaceViolationError):
        await READ_FILE.execute(READ_FILE.validate_input({"path": path}), context)
    if case.writable:
        with pytest.raises(WorkspaceViolationError):
            workspace.write_atomic(path, b"PWNED\n")
        with pytest.raises(WorkspaceViolationError):
            workspace.resolve_for_write(path)
        edit = EDIT_FILE.validate_input({"path": path, "operation": "write", "content": "PWNED\n"})
        with pytest.raises(WorkspaceViolationError):
            await EDIT_FILE.execute(edit, context)
    assert (_snapshot(outside), _snapshot(sibling)) == before


@pytest.mark.parametrize(
    "name",
    [
        "%2e%2e/%2e%2e/etc/passwd",
        "..%2f..%2foutside%2fsecret.txt",
        "%252e%252e%252f",
        "..\\..\\outside\\secret.txt",
        "\u2024\u2024/x",
        "\uff0e\uff0e/x",
        "...",
        "~/.ssh/id_rsa",
    ],
)
def test_encoded_looking_names_are_literal_names_inside(
    name: str, populated: Path, guarded_outside: Path
) -> None:
    """Nothing is URL- or Unicode-decoded: such names can only ever name files inside."""
    workspace = Workspace(populated)
    with pytest.raises(ExecutorError, match="no such"):
        workspace.read_bytes(name, 1024)
    written = workspace.write_atomic(name, b"literal\n")
    assert (populated / written.path).read_bytes() == b"literal\n"
    assert populated in (populated / written.path).resolve().parents


async def test_symlink_created_by_previous_step_is_refused(
    populated: Path, guarded_outside: Path, make_context: Callable[..., ExecutorContext]
) -> None:
    context = make_context()
    script = f"import os; os.symlink({str(guarded_outside)!r}, 'evil')"
    plant = RUN_COMMAND.validate_input(
        {"argv": [context.limits.command_allowlist[0], "-c", script]}
    )
    if context.limits.sandbox != "none":
        # A sandboxed command's symlink is refused outright: none of its changes are applied.
        with pytest.raises(WorkspaceViolationError, match="evil \\(symlink\\)"):
            await RUN_COMMAND.execute(plant, context)
        assert not (populated / "evil").exists()
    # An unsandboxed command plants it; every later step still refuses to follow it.
    created = await RUN_COMMAND.execute(plant, make_context(sandbox="none"))
    assert created.exit_code == 0, created.stderr
    assert (populated / "evil").is_symlink()

    with pytest.raises(WorkspaceViolationError):
        await READ_FILE.execute(READ_FILE.validate_input({"path": "evil/secret.txt"}), context)
    edit = {"path": "evil/secret.txt", "operation": "write", "content": "PWNED"}
    with pytest.raises(WorkspaceViolationError):
        await EDIT_FILE.execute(EDIT_FILE.validate_input(edit), context)
    with pytest.raises(WorkspaceViolationError):
        await RUN_COMMAND.execute(
            RUN_COMMAND.validate_input({"argv": ["true"], "cwd": "evil"}), context
        )
    listed = await LIST_FILES.execute(LIST_FILES.validate_input({}), context)
    assert [f.path for f in listed.files] == ["sub/file.txt"]


def test_symlinks_that_stay_inside_are_followed(populated: Path) -> None:
    (populated / "alias").symlink_to("sub/file.txt")
    (populated / "subalias").symlink_to(populated / "sub")
    (populated / "sub" / "back").symlink_to("../sub/file.txt")
    workspace = Workspace(populated)
    assert workspace.read_bytes("alias", 100) == b"inside\n"
    assert workspace.read_bytes("subalias/file.txt", 100) == b"inside\n"
    assert workspace.read_bytes("sub/back", 100) == b"inside\n"
    assert workspace.resolve_for_read("alias") == populated / "sub" / "file.txt"
    workspace.write_atomic("alias", b"changed\n")
    assert (populated / "alias").is_symlink()  # the link's target was replaced, not the link
    assert (populated / "sub" / "file.txt").read_bytes() == b"changed\n"


def test_check_workspace_root_refuses_paths_outside_configured_roots(
    tmp_path: Path, root: Path, outside: Path
) -> None:
    (root / "project").mkdir()
    (root / "escape").symlink_to(outside)
    assert check_workspace_root(str(root / "project"), [root]) == root / "project"
    assert check_workspace_root(str(root / "project"), [tmp_path / "missing", root]) == (
        root / "project"
    )
    for bad in [str(outside), str(root / "escape"), str(root / ".." / "outside"), "", "a\x00b"]:
        with pytest.raises(WorkspaceViolationError):
            check_workspace_root(bad, [root])
    with pytest.raises(WorkspaceViolationError, match="does not exist"):
        check_workspace_root(str(root / "nope"), [root])
    (root / "file").write_text("x")
    with pytest.raises(WorkspaceViolationError, match="not a directory"):
        check_workspace_root(str(root / "file"), [root])


def test_a_workspace_root_itself_is_never_a_workspace(tmp_path: Path, root: Path) -> None:
    # The root holds every run's workspace: a run given it could read all the others.
    (root / "project").mkdir()
    for same in (str(root), f"{root}/", f"{root}/project/..", str(root / ".")):
        with pytest.raises(WorkspaceViolationError, match="workspace root itself") as caught:
            check_workspace_root(same, [root])
        assert caught.value.code == "workspace_violation"
        assert caught.value.http_status == 422
    # Equal to one root but strictly inside another configured root: that one contains it.
    assert check_workspace_root(str(root), [root, tmp_path]) == root


class _Swapper(threading.Thread):
    """Flips ``root/<name>`` between the real thing and a symlink to outside, as fast as it can."""

    def __init__(self, root: Path, name: str, outside_target: Path) -> None:
        super().__init__(daemon=True)
        self.path = root / name
        self.parked = root / f".parked-{name}"
        self.target = outside_target
        self.stop = threading.Event()
        self.swaps = 0

    def run(self) -> None:
        self.error: OSError | None = None
        try:
            while not self.stop.is_set():
                os.rename(self.path, self.parked)
                os.symlink(self.target, self.path)
                time.sleep(0)
                os.unlink(self.path)
                os.rename(self.parked, self.path)
                self.swaps += 1
        except OSError as exc:  # surfaced by the test instead of dying as a thread warning
            self.error = exc


def _race(swapper: _Swapper, attempt: Callable[[], object], seconds: float = 1.0) -> list[object]:
    results: list[object] = []
    swapper.start()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                results.append(attempt())
            except (WorkspaceViolationError, ExecutorError):
                results.append("refused")
    finally:
        swapper.stop.set()
        swapper.join()
    assert swapper.error is None
    assert swapper.swaps > 0
    return results


def test_race_swapping_a_directory_component_never_reaches_outside(
    populated: Path, outside: Path
) -> None:
    (outside / "file.txt").write_text("OUTSIDE\n")
    before = _snapshot(outside)
    workspace = Workspace(populated)
    swapper = _Swapper(populated, "sub", outside)

    def attempt() -> object:
        data = workspace.read_bytes("sub/file.txt", 100)
        workspace.write_atomic("sub/written.txt", b"race\n", create_parents=False)
        return data

    results = _race(swapper, attempt)
    assert all(r in (b"inside\n", "refused") for r in results), set(map(repr, results))
    assert _snapshot(outside) == before


def test_race_swapping_the_final_component_never_reaches_outside(
    populated: Path, outside: Path
) -> None:
    before = _snapshot(outside)
    workspace = Workspace(populated)
    swapper = _Swapper(populated / "sub", "file.txt", outside / "secret.txt")
    results = _race(swapper, lambda: workspace.read_bytes("sub/file.txt", 100))
    assert all(r in (b"inside\n", "refused") for r in results), set(map(repr, results))
    assert _snapshot(outside) == before


async def test_race_through_executors_never_reaches_outside(
    populated: Path, outside: Path, context: ExecutorContext
) -> None:
    (outside / "file.txt").write_text("OUTSIDE\n")
    before = _snapshot(outside)
    swapper = _Swapper(populated, "sub", outside)
    swapper.start()
    seen: set[str] = set()
    try:
        for _ in range(200):
            try:
                read = await READ_FILE.execute(
                    READ_FILE.validate_input({"path": "sub/file.txt"}), context
                )
                seen.add(read.content)
                edit = {"path": "sub/file.txt", "operation": "replace", "old": "in", "new": "in"}
                await EDIT_FILE.execute(EDIT_FILE.validate_input(edit), context)
            except (WorkspaceViolationError, ExecutorError):
                seen.add("refused")
    finally:
        swapper.stop.set()
        swapper.join()
    assert swapper.error is None
    assert seen <= {"inside\n", "refused"}
    assert _snapshot(outside) == before
