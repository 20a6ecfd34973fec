"""max_write_bytes holds for everything a sandboxed command writes: real bubblewrap, real files.

A command sees its workspace through an overlay whose upper layer lies on a tmpfs of
max_write_bytes (with HOME and TMPDIR); its changes reach the real workspace when it ends, all
or nothing."""

from __future__ import annotations

import ast
import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import agent_engine
from agent_engine.errors import SandboxUnavailableError, WorkspaceViolationError
from agent_engine.executors import overlay_runner
from agent_engine.executors.base import ExecutorContext
from agent_engine.executors.overlay_layer import CommandWriteLimitError, WriteLayer, layer_inodes
from agent_engine.executors.run_command import RUN_COMMAND, RunCommandOutput
from tests.sandboxing import require_sandbox

MIB = 1 << 20
Snapshot = dict[str, tuple[Any, ...]]


@pytest.fixture(autouse=True)
def sandboxed() -> None:
    require_sandbox()


def snapshot(root: Path) -> Snapshot:
    """Every entry under ``root``: its kind, permission bits and content (or link target)."""
    found: Snapshot = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            key, mode = str(path.relative_to(root)), stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                found[key] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[key] = ("dir", mode)
            else:
                found[key] = ("file", mode, path.read_bytes())
    return found


def populate(root: Path) -> None:
    """A workspace with files, nested folders and modes to change, delete and replace."""
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "mod.py").write_text("VALUE = 1\n")
    (root / "src" / "pkg" / "old.py").write_text("gone soon\n")
    (root / "build" / "deep").mkdir(parents=True)
    (root / "build" / "deep" / "artifact.o").write_bytes(b"\x7fELF" * 100)
    (root / "replaced_by_dir").write_text("a file now\n")
    (root / "replaced_by_file").mkdir()
    (root / "replaced_by_file" / "inner.txt").write_text("inner\n")
    (root / "recreated").mkdir()
    (root / "recreated" / "stale.txt").write_text("stale\n")
    (root / "renamed.txt").write_text("move me\n")
    (root / "moved_dir").mkdir()
    (root / "moved_dir" / "content.txt").write_text("travels\n")
    (root / "script.sh").write_text("#!/bin/sh\n")
    (root / "script.sh").chmod(0o644)


# Changes of every kind the upper layer can hold: new, changed and deleted files, new, deleted,
# replaced and recreated folders, modes, renames of files and of folders, explicit times.
CHANGES = """
import os, shutil
os.makedirs('new/a/b', exist_ok=True)
with open('new/a/b/data.bin', 'wb') as f: f.write(bytes(range(256)) * 40)
with open('new/secret.txt', 'w') as f: f.write('mode 640\\n')
os.chmod('new/secret.txt', 0o640)
os.chmod('new/a', 0o750)
with open('src/pkg/mod.py', 'a') as f: f.write('VALUE += 1\\n')
os.remove('src/pkg/old.py')
shutil.rmtree('build')
os.remove('replaced_by_dir'); os.mkdir('replaced_by_dir')
with open('replaced_by_dir/x.txt', 'w') as f: f.write('x\\n')
shutil.rmtree('replaced_by_file')
with open('replaced_by_file', 'w') as f: f.write('a file now\\n')
shutil.rmtree('recreated'); os.mkdir('recreated')
with open('recreated/fresh.txt', 'w') as f: f.write('fresh\\n')
os.rename('renamed.txt', 'new/renamed.txt')
shutil.move('moved_dir', 'new/moved_dir')
os.chmod('script.sh', 0o755)
os.utime('new/secret.txt', ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
"""


async def run(context: ExecutorContext, *argv: str, **data: Any) -> RunCommandOutput:
    return await RUN_COMMAND.execute(
        RUN_COMMAND.validate_input({"argv": list(argv), **data}), context
    )


async def test_changes_under_the_cap_reach_the_workspace_exactly(
    root: Path,
    tmp_path: Path,
    make_context: Callable[..., ExecutorContext],
    context: ExecutorContext,
    python_exe: str,
) -> None:
    """The same script run without a sandbox on a copy gives the same tree: files, contents,
    modes, deletions, replacements and renames."""
    populate(root)
    direct = tmp_path / "direct"
    shutil.copytree(root, direct, symlinks=True)
    unsandboxed = replace(make_context(sandbox="none"), workspace_root=direct.resolve())
    expected = await run(unsandboxed, python_exe, "-c", CHANGES)
    assert expected.exit_code == 0, expected.stderr

    out = await run(context, python_exe, "-c", CHANGES, max_write_bytes=4 * MIB)

    assert (out.exit_code, out.write_limit_reached) == (0, False), out.stderr
    assert snapshot(root) == snapshot(direct)
    assert (root / "new" / "secret.txt").stat().st_mtime_ns == 1_600_000_000_000_000_000
    assert not list(root.glob(".agent-engine-apply-*"))  # the staging folder is gone


async def test_a_command_writing_past_its_cap_fails_and_the_workspace_is_left_as_it_was(
    root: Path, context: ExecutorContext, python_exe: str
) -> None:
    """Many files, each under the per-file cap, add up past max_write_bytes: writes fail with
    ENOSPC inside, the step fails naming the cap, and none of the changes are applied."""
    populate(root)
    before = snapshot(root)
    script = (
        "import os\n"
        "os.remove('script.sh')\n"
        "with open('src/pkg/mod.py', 'a') as f: f.write('changed\\n')\n"
        "os.makedirs('out', exist_ok=True)\n"
        "for i in range(64):\n"
        "    with open(f'out/part{i}.bin', 'wb') as f: f.write(b'x' * (64 << 10))\n"
    )
    with pytest.raises(CommandWriteLimitError) as caught:
        await run(context, python_exe, "-c", script, max_write_bytes=MIB, max_file_bytes=128 << 10)
    error = caught.value
    assert error.code == "command_write_limit"
    assert "max_write_bytes 1048576" in error.detail
    assert "AGENT_ENGINE_COMMAND_MAX_WRITE_BYTES" in error.detail
    assert (error.data["limit"], error.data["maximum"]) == ("max_write_bytes", MIB)
    output = error.data["output"]
    assert output["write_limit_reached"] is True
    assert "No space left on device" in output["stderr"]
    assert snapshot(root) == before


async def test_home_and_tmpdir_share_the_same_budget(
    root: Path, context: ExecutorContext, python_exe: str
) -> None:
    script = (
        "import os\n"
        "open('kept-if-applied.txt', 'w').write('x')\n"
        "with open(os.path.join(os.environ['TMPDIR'], 'big'), 'wb') as f:\n"
        "    f.write(b'x' * (2 << 20))\n"
    )
    with pytest.raises(CommandWriteLimitError):
        await run(context, python_exe, "-c", script, max_write_bytes=MIB)
    assert os.listdir(root) == []


async def test_empty_files_count_against_the_budget_too(
    root: Path, context: ExecutorContext, python_exe: str
) -> None:
    """Empty files cost no bytes but an inode each; the layer holds a bounded number."""
    count = layer_inodes(MIB) + 10
    script = f"for i in range({count}): open(f'e{{i}}', 'w').close()"
    with pytest.raises(CommandWriteLimitError) as caught:
        await run(context, python_exe, "-c", script, max_write_bytes=MIB)
    assert "No space left on device" in caught.value.data["output"]["stderr"]
    assert os.listdir(root) == []


@pytest.mark.parametrize(
    ("making", "named"),
    [
        ("os.symlink('/etc/passwd', 'sub/link')", "sub/link (symlink)"),
        ("os.symlink('inside.txt', 'relative')", "relative (symlink)"),
        ("os.mkfifo('pipe')", "pipe (FIFO)"),
    ],
)
async def test_a_symlink_or_special_file_the_command_creates_refuses_all_its_changes(
    root: Path, context: ExecutorContext, python_exe: str, making: str, named: str
) -> None:
    populate(root)
    before = snapshot(root)
    script = (
        "import os\n"
        "os.makedirs('sub', exist_ok=True)\n"
        "open('inside.txt', 'w').write('fine on its own')\n"
        "os.remove('renamed.txt')\n"
        f"{making}\n"
    )
    with pytest.raises(WorkspaceViolationError) as caught:
        await run(context, python_exe, "-c", script)
    assert named in caught.value.detail
    assert "nothing it wrote was applied" in caught.value.detail
    assert caught.value.data["output"]["exit_code"] == 0
    assert snapshot(root) == before


async def test_renames_of_files_and_new_folders_work_and_old_folders_move_by_copy(
    root: Path, context: ExecutorContext, python_exe: str
) -> None:
    """A folder that existed before the command cannot be renamed in place (EXDEV, as across
    file systems); shutil.move and mv then copy it, so the result is the same."""
    populate(root)
    script = (
        "import errno, os, shutil\n"
        "os.rename('renamed.txt', 'renamed-now.txt')\n"
        "os.makedirs('fresh/inner'); open('fresh/inner/f', 'w').write('f')\n"
        "os.rename('fresh', 'fresher')\n"
        "try:\n"
        "    os.rename('moved_dir', 'moved_dir2')\n"
        "except OSError as exc:\n"
        "    print(errno.errorcode[exc.errno])\n"
        "shutil.move('moved_dir', 'moved_dir2')\n"
    )
    out = await run(context, python_exe, "-c", script)
    assert (out.exit_code, out.stdout) == (0, "EXDEV\n"), out.stderr
    assert (root / "renamed-now.txt").read_text() == "move me\n"
    assert not (root / "renamed.txt").exists()
    assert (root / "fresher" / "inner" / "f").read_text() == "f"
    assert not (root / "fresh").exists()
    assert (root / "moved_dir2" / "content.txt").read_text() == "travels\n"
    assert not (root / "moved_dir").exists()


async def test_hard_links_become_copies_and_set_id_bits_are_dropped(
    root: Path, context: ExecutorContext, python_exe: str
) -> None:
    script = (
        "import os\n"
        "open('one', 'w').write('shared')\n"
        "os.link('one', 'two')\n"
        "open('tool', 'w').write('#!/bin/sh\\n')\n"
        "os.chmod('tool', 0o6755)\n"
    )
    out = await run(context, python_exe, "-c", script)
    assert out.exit_code == 0, out.stderr
    one, two = (root / "one").stat(), (root / "two").stat()
    assert (root / "two").read_text() == "shared"
    assert one.st_ino != two.st_ino and one.st_nlink == 1
    assert stat.S_IMODE((root / "tool").stat().st_mode) == 0o755


async def test_the_real_workspace_is_untouched_while_the_command_runs(
    root: Path, context: ExecutorContext, python_exe: str
) -> None:
    """The command reads the real workspace (the overlay's lower layer) and writes only its
    own layer: the host sees nothing until the command has ended."""
    (root / "seen.txt").write_text("from the host\n")
    host_view = str(root / "seen.txt")
    script = (
        "import os\n"
        "print(open('seen.txt').read(), end='')\n"
        "open('seen.txt', 'a').write('by the command\\n')\n"
        "open('made.txt', 'w').write('made')\n"
        # The same path, inside: the command sees its own changes.
        f"print(open({host_view!r}).read(), end='')\n"
    )
    out = await run(context, python_exe, "-c", script)
    assert out.stdout == "from the host\nfrom the host\nby the command\n"
    assert (root / "seen.txt").read_text() == "from the host\nby the command\n"
    assert (root / "made.txt").read_text() == "made"


async def test_git_writes_of_a_command_reach_the_workspace(
    root: Path, make_context: Callable[..., ExecutorContext], python_exe: str
) -> None:
    """A command may write .git as before (allow_git_writes governs edit_file, not commands)."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    context = make_context(command_allowlist=(git, python_exe))
    (root / "a.txt").write_text("a\n")
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for argv in (["init", "-q"], ["add", "a.txt"], [*identity, "commit", "-qm", "first"]):
        out = await run(context, git, *argv)
        assert out.exit_code == 0, out.stderr
    log = await run(context, git, "log", "--format=%s")
    assert log.stdout == "first\n"
    assert (root / ".git" / "HEAD").is_file()


def test_a_layer_that_was_never_made_names_the_reason(root: Path) -> None:
    layer = WriteLayer(os.open(root, os.O_RDONLY | os.O_DIRECTORY))
    try:
        with pytest.raises(SandboxUnavailableError, match="write layer could not be made"):
            layer.receive()
    finally:
        layer.close()


def test_the_runner_imports_the_standard_library_only() -> None:
    """It runs in the forked child between fork and exec: system calls and the standard library
    only, nothing of ours that might take a lock another thread of the server held."""
    tree = ast.parse(Path(overlay_runner.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


NOBODY = 65534
# The executor run by a server that is not root: a workspace of its own in /tmp, a command that
# writes, deletes and makes a folder only its owner could open, then one that overflows.
AS_NON_ROOT = """
import asyncio, json, logging, os, sys, tempfile
sys.path[:0] = json.loads(sys.argv[1])
from pathlib import Path
from agent_engine.errors import EngineError
from agent_engine.executors.base import ExecutionLimits, ExecutorContext
from agent_engine.executors.run_command import RUN_COMMAND
WRITES = (
    "import os; print(os.getuid()); open('new.txt', 'w').write('n'); os.remove('keep.txt'); "
    "os.mkdir('closed'); open('closed/inner', 'w').write('i'); os.chmod('closed', 0)"
)
FILLS = "[open(f'f{i}', 'wb').write(b'x' * 65536) for i in range(40)]"

async def main():
    seen = {"uid": os.getuid()}
    with tempfile.TemporaryDirectory() as folder:
        ws = Path(folder)
        (ws / "keep.txt").write_text("k")
        limits = ExecutionLimits(command_allowlist=(sys.executable,), sandbox="bwrap")
        context = ExecutorContext(
            run_id="r", step_number=1, workspace_root=ws, llm=None,
            logger=logging.getLogger("non-root"), limits=limits,
        )
        data = {"argv": [sys.executable, "-c", WRITES]}
        out = await RUN_COMMAND.execute(RUN_COMMAND.validate_input(data), context)
        seen["command"] = [out.exit_code, out.stdout, out.stderr]
        seen["after"] = sorted(os.listdir(ws))
        seen["closed_mode"] = os.stat(ws / "closed").st_mode & 0o777
        os.chmod(ws / "closed", 0o700)
        seen["inner"] = (ws / "closed" / "inner").read_text()
        data = {"argv": [sys.executable, "-c", FILLS], "max_write_bytes": 1 << 20}
        try:
            await RUN_COMMAND.execute(RUN_COMMAND.validate_input(data), context)
        except EngineError as exc:
            seen["overflow"] = exc.code
        seen["after_overflow"] = sorted(os.listdir(ws))
    print(json.dumps(seen))

asyncio.run(main())
"""


def test_the_write_layer_holds_for_a_server_that_is_not_root() -> None:
    """The same executor in a server running as an unprivileged uid (the system's interpreter
    of this Python version, the package and its dependencies from here)."""
    if os.geteuid() != 0:
        pytest.skip("starting a server as another uid needs root")
    python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    paths = [str(Path(agent_engine.__file__).parents[1]), sysconfig.get_paths()["purelib"]]
    if not os.access(python, os.X_OK) or not all(readable_by_all(p) for p in paths):
        pytest.skip(f"needs {python} and a package folder every uid can read")
    done = subprocess.run(
        [python, "-I", "-c", AS_NON_ROOT, json.dumps(paths)],
        capture_output=True,
        text=True,
        timeout=60,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        cwd="/",
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["uid"] == NOBODY
    assert seen["command"] == [0, "1000\n", ""]
    assert seen["after"] == ["closed", "new.txt"]
    assert (seen["closed_mode"], seen["inner"]) == (0, "i")
    assert seen["overflow"] == "command_write_limit"
    assert seen["after_overflow"] == ["closed", "new.txt"]


def readable_by_all(path: str) -> bool:
    """Whether every uid can reach and read ``path`` (each folder on the way searchable)."""
    current = Path(path)
    for folder in [current, *current.parents]:
        if not folder.exists() or not folder.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(current.stat().st_mode & stat.S_IROTH)
