"""A private PostgreSQL server for development, demos and the test suite.

Resolution order (see `resolve_dsn`):
1. `METRICS_PIPELINE_DSN` is set: use it, start nothing.
2. Otherwise run a private server under a data directory (default `.metrics_pipeline/pg`), with the
   PostgreSQL binaries shipped by the `pgserver` wheel, or else the machine's own binaries
   (`pg_config --bindir`, `/usr/lib/postgresql/<version>/bin`, `PATH`).
3. Neither exists: fail with a message that says how to provide PostgreSQL.

We drive `initdb`/`pg_ctl` ourselves rather than through pgserver's Python wrapper, so that both
kinds of binaries share one lifecycle: start attaches to a server already running on the data
directory, stop is an explicit fast shutdown, and nothing is stopped behind our back at interpreter
exit. PostgreSQL refuses to run as root, so as root the server runs as an unprivileged user
(`postgres` if it exists, else a `metrics-pg` system user we create).

The server listens on a unix socket inside its data directory only (no TCP port to collide with),
unless `port=` asks for 127.0.0.1 as well.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psycopg

from metrics_pipeline.lib import settings
from metrics_pipeline.lib.warehouse.db import Warehouse

log = logging.getLogger(__name__)

SUPERUSER = "postgres"
#: Databases every server gets: the warehouse and Dagster's own instance storage.
WAREHOUSE_DB = "metrics"
DAGSTER_DB = "dagster"
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; leave room for "/.s.PGSQL.NNNNN"
_FALLBACK_USER = "metrics-pg"
#: Force a directory of PostgreSQL binaries (skips the search).
BIN_ENV = "METRICS_PIPELINE_PG_BIN"

HOW_TO_PROVIDE = (
    "No PostgreSQL available. Either set METRICS_PIPELINE_DSN to a libpq DSN of an existing "
    "database (e.g. postgresql://user:password@host:5432/metrics), install the embedded server with "
    "`pip install 'metrics_pipeline[embedded]'` (the pgserver wheel), or install PostgreSQL "
    "binaries (e.g. `apt-get install postgresql`) so that initdb and pg_ctl can be found."
)


class PostgresUnavailable(RuntimeError):
    """No DSN is configured and no PostgreSQL binaries were found."""


def find_binaries() -> Path:
    """Directory holding `initdb`, `pg_ctl` and `postgres`: pgserver's first, then the machine's."""
    candidates: list[Path] = []
    override = os.environ.get(BIN_ENV)
    if override:
        directory = Path(override)
        if not all((directory / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            raise PostgresUnavailable(f"{BIN_ENV}={override} does not contain initdb, pg_ctl and postgres")
        return directory
    spec = importlib.util.find_spec("pgserver")
    if spec and spec.origin:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (subprocess.CalledProcessError, OSError):
            pass
    versioned = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name or 0), reverse=True
    )
    candidates.extend(Path(p) for p in versioned)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for directory in candidates:
        if all((directory / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    raise PostgresUnavailable(HOW_TO_PROVIDE)


def _run_as_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run PostgreSQL as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in (SUPERUSER, _FALLBACK_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _FALLBACK_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(_FALLBACK_USER)


def _make_traversable(path: Path) -> None:
    """Let the unprivileged server user reach `path`: add o+x (search, not read) on its parents."""
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            log.info("adding o+x to %s so the PostgreSQL user can reach its data directory", parent)
            parent.chmod(mode | 0o001)


@dataclasses.dataclass
class EmbeddedPostgres:
    """A PostgreSQL server owned by this project, living in `data_dir`.

    Args:
        data_dir: the cluster directory; created by `start()` if it does not exist.
        port: also listen on 127.0.0.1:port (default: unix socket only).
        durable: False trades crash safety for speed (fsync off); for throwaway test servers only.
    """

    data_dir: Path
    port: int | None = None
    durable: bool = True

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().absolute()

    # -- paths -------------------------------------------------------------------------------
    @property
    def socket_dir(self) -> Path:
        if len(str(self.data_dir)) <= _SOCKET_PATH_MAX - 16:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"metrics-pg-{digest}"

    @property
    def _socket_port(self) -> int:
        return self.port or 5432

    def dsn(self, database: str = WAREHOUSE_DB) -> str:
        """libpq URI for `database` on this server (unix socket)."""
        return (
            f"postgresql://{SUPERUSER}@/{database}"
            f"?host={quote(str(self.socket_dir), safe='/')}&port={self._socket_port}"
        )

    def sqlalchemy_url(self, database: str = DAGSTER_DB) -> str:
        """URL for dagster-postgres: it must name psycopg2 explicitly (SQLAlchemy 2.1 picks psycopg 3)."""
        return self.dsn(database).replace("postgresql://", "postgresql+psycopg2://", 1)

    # -- lifecycle ---------------------------------------------------------------------------
    def _exec(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        user = _run_as_user()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        if user is not None:
            env["HOME"] = str(self.data_dir)
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        return subprocess.run(args, env=env, capture_output=True, text=True, **kwargs)

    def is_running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        result = self._exec([str(find_binaries() / "pg_ctl"), "status", "-D", str(self.data_dir)])
        return result.returncode == 0

    def start(self) -> EmbeddedPostgres:
        """Initialise the cluster if needed and start it, or attach to the one already running."""
        bindir = find_binaries()
        user = _run_as_user()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bindir, user)
        if self.is_running():
            log.info("attaching to the PostgreSQL server already running in %s", self.data_dir)
        else:
            self._start_server(bindir, user)
        self._wait_ready()
        self.ensure_database(WAREHOUSE_DB)
        self.ensure_database(DAGSTER_DB)
        return self

    def _initdb(self, bindir: Path, user: pwd.struct_passwd | None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if user is not None:
            _make_traversable(self.data_dir)
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
        result = self._exec(
            [
                str(bindir / "initdb"),
                "-D", str(self.data_dir),
                "-U", SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ]
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed in {self.data_dir}:\n{result.stderr.strip()}")
        (self.data_dir / "log").mkdir(exist_ok=True)
        if user is not None:
            os.chown(self.data_dir / "log", user.pw_uid, user.pw_gid)

    def _server_options(self) -> list[str]:
        listen = "127.0.0.1" if self.port else ""
        options = {
            "listen_addresses": f"'{listen}'",
            "port": str(self._socket_port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "200",
            "shared_buffers": "256MB",
            "work_mem": "32MB",
            "maintenance_work_mem": "256MB",
            "max_wal_size": "4GB",
            "logging_collector": "off",
        }
        if not self.durable:
            options.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        return [f"-c {key}={value}" for key, value in options.items()]

    def _start_server(self, bindir: Path, user: pwd.struct_passwd | None) -> None:
        socket_dir = self.socket_dir
        socket_dir.mkdir(parents=True, exist_ok=True)
        if user is not None and socket_dir != self.data_dir:
            os.chown(socket_dir, user.pw_uid, user.pw_gid)
        logfile = self.data_dir / "log" / "server.log"
        result = self._exec(
            [
                str(bindir / "pg_ctl"),
                "start",
                "-D", str(self.data_dir),
                "-w",
                "-t", "60",
                "-l", str(logfile),
                "-o", " ".join(self._server_options()),
            ],
            # pg_ctl's child keeps stdout open; without this run() would wait for the server to exit.
            stdin=subprocess.DEVNULL,
            timeout=90,
        )
        if result.returncode != 0 and not self.is_running():
            tail = logfile.read_text(errors="replace")[-3000:] if logfile.exists() else ""
            raise RuntimeError(
                f"PostgreSQL did not start in {self.data_dir}: {result.stderr.strip()}\n{tail}"
            )
        log.info("started PostgreSQL in %s", self.data_dir)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=5):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def ensure_database(self, name: str) -> str:
        """Create database `name` if missing; return its DSN."""
        settings.validate_identifier(name, what="database name")
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                try:
                    conn.execute(f'CREATE DATABASE "{name}"')
                except psycopg.errors.DuplicateDatabase:
                    pass  # created concurrently by another process
        return self.dsn(name)

    def stop(self) -> None:
        """Fast shutdown (active sessions are rolled back); a no-op if it is not running."""
        if not self.is_running():
            return
        result = self._exec(
            [str(find_binaries() / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60"],
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0 and self.is_running():
            raise RuntimeError(f"pg_ctl stop failed: {result.stderr.strip()}")
        log.info("stopped PostgreSQL in %s", self.data_dir)


def default_data_dir() -> Path:
    return settings.state_dir() / "pg"


def resolve_warehouse() -> Warehouse:
    """The warehouse of this deployment: `resolve_dsn()` and the configured schema."""
    return Warehouse(resolve_dsn(), settings.schema_name())


def resolve_dsn(database: str = WAREHOUSE_DB, *, data_dir: Path | None = None) -> str:
    """The warehouse DSN: `METRICS_PIPELINE_DSN` if set, else an embedded server (started if needed)."""
    configured = os.environ.get(settings.DSN_ENV)
    if configured:
        return configured
    server = EmbeddedPostgres(data_dir or default_data_dir()).start()
    return server.ensure_database(database)
