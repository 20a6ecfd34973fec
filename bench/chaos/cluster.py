"""A private, throwaway PostgreSQL cluster for the chaos run: its own data and socket folders,
listening on 127.0.0.1 and a free port with trust authentication, restarted on purpose while the
engine runs, stopped and deleted at the end. The machine's shared server is never touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg


def _pg_bin() -> Path:
    """Where PostgreSQL's server programs are: ``CHAOS_PG_BIN``, else the newest Debian-style
    /usr/lib/postgresql/N/bin, else ``pg_config --bindir``."""
    if os.environ.get("CHAOS_PG_BIN"):
        return Path(os.environ["CHAOS_PG_BIN"])
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: [int(n) for n in p.parts[-3].split(".") if n.isdigit()],
    )
    if versions:
        return versions[-1].parent
    config = shutil.which("pg_config")
    if config:
        found = subprocess.run([config, "--bindir"], capture_output=True, text=True, check=False)
        return Path(found.stdout.strip())
    return Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
DATABASE = "chaos"
START_TIMEOUT_S = 60


# Instrumentation of the throwaway database only: a side table and a trigger of the chaos run.
HOLD_LOG_SQL = """
CREATE TABLE chaos_hold_log (
    reservation_id uuid NOT NULL, status text NOT NULL, at timestamptz NOT NULL
);
CREATE FUNCTION chaos_log_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO chaos_hold_log VALUES (NEW.id, NEW.status, clock_timestamp());
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER chaos_log_hold AFTER INSERT OR UPDATE ON budget_reservations
FOR EACH ROW EXECUTE FUNCTION chaos_log_hold();
"""


class ClusterError(RuntimeError):
    """The private cluster could not be created, started or restarted."""


def cluster_problem() -> str | None:
    """Why a private cluster cannot be made here (``None``: it can)."""
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL's initdb not found in {PG_BIN} (set CHAOS_PG_BIN)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root needs runuser to start PostgreSQL as the postgres user"
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_owner(argv: Sequence[str]) -> list[str]:
    # initdb and postgres refuse to run as root: there they run as the postgres user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return list(argv)


@dataclass
class PrivateCluster:
    """One PostgreSQL cluster in ``folder`` on ``port``."""

    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "postgres.log"

    @property
    def dsn(self) -> str:
        """The database's URL for asyncpg."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def engine_url(self) -> str:
        """The database's URL for the engine (SQLAlchemy with asyncpg)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _pg_ctl(self, *args: str) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200 -c fsync=off"
        )
        argv = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log)]
        argv += ["-o", options, "-w", "-t", str(START_TIMEOUT_S), *args]
        done = subprocess.run(_as_owner(argv), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise ClusterError(f"pg_ctl {' '.join(args)}: {done.stderr.strip()}\n{tail}")

    def init(self) -> None:
        """Create the cluster's files (trust authentication, user postgres)."""
        argv = [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres"]
        argv += ["--auth=trust", "--no-sync", "-E", "UTF8"]
        done = subprocess.run(_as_owner(argv), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ClusterError(f"initdb: {done.stderr.strip()}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._pg_ctl("start")

    def restart(self) -> float:
        """Restart the server (fast shutdown: every backend is disconnected); the seconds taken."""
        started = time.monotonic()
        self._pg_ctl("restart", "-m", "fast")
        return time.monotonic() - started

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (at once by default; ``fast`` disconnects every backend first)."""
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", mode)

    async def create_database(self) -> None:
        """Create the engine's database."""
        connection = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres")
        try:
            await connection.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            await connection.close()

    async def install_hold_log(self) -> None:
        """Record, by the database's own clock, when each budget hold was written and each
        change of its status (the rows keep only the writers' times): the checks read it."""
        connection = await asyncpg.connect(self.dsn)
        try:
            await connection.execute(HOLD_LOG_SQL)
        finally:
            await connection.close()

    async def terminate_backends(self, *, listening_only: bool = False) -> int:
        """``pg_terminate_backend`` of every other backend of the engine's database (or only
        those whose last query was LISTEN); how many were ended."""
        condition = "AND query ILIKE 'LISTEN%'" if listening_only else ""
        connection = await asyncpg.connect(self.dsn)
        try:
            ended = await connection.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()"
                f" AND backend_type = 'client backend' {condition}) AS ended",
                DATABASE,
            )
        finally:
            await connection.close()
        return int(ended or 0)


@contextmanager
def private_cluster(parent: Path | None = None, *, keep: bool = False) -> Iterator[PrivateCluster]:
    """A started private cluster for the block; stopped and deleted afterwards (stopped only,
    with ``keep``: its folder can be started again to look at what the run left)."""
    folder = Path(tempfile.mkdtemp(prefix="chaos-pg-", dir=parent))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    os.chmod(folder, 0o700)
    cluster = PrivateCluster(folder, _free_port())
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop("fast")
        finally:
            if not keep:
                shutil.rmtree(folder, ignore_errors=True)
