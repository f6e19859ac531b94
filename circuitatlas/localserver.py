"""A real Neo4j Community server run from Maven Central jars, with no Docker.

The jars are fetched once with Maven into the user cache dir (:mod:`.neo4j_jars`); the server runs
``org.neo4j.server.CommunityEntryPoint`` on Java 17+ with every setting passed as
``-c key=value``, listening on 127.0.0.1 only. A state directory holds the store,
the logs and ``state.json`` (password, pid, port, URI), all of it owner-only: directories 0700,
files 0600 (Neo4j runs with umask 077; an older state dir is tightened at start).

Transaction logs stay bounded: Neo4j prunes them only at a checkpoint, and its default policy
(every 15 minutes or 100,000 transactions) let them reach 14 GB during an ingest of big batches.
The server checkpoints by volume instead (``db.checkpoint=VOLUME``, Community has it: a checkpoint
once 128 MiB of log has been written since the last, checked every second), and after each
checkpoint keeps 2 rotated files of 64 MiB before it: about 128 MiB + 3 x 64 MiB, a few hundred MB
at most, whatever the size or rate of the transactions.

A state file that has lost the password the store was given is an error, never replaced by a
new password (the store would refuse it); :meth:`LocalServer.reset_password` (``circuitatlas db
reset-password``) sets a new one with auth disabled for a moment, and keeps the data.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from circuitatlas import paths
from circuitatlas.errors import ConfigError, ServerError
from circuitatlas.neo4j_jars import NEO4J_VERSION, JarCache, dir_bytes, find_java
from circuitatlas.paths import file_lock
from circuitatlas.ports import free_port, pid_alive, port_free, port_open

__all__ = ["LocalServer", "ServerState", "ServerStatus", "DEFAULT_PORT", "DEFAULT_HEAP", "DEFAULT_PAGECACHE",
           "NEO4J_VERSION", "JarCache", "find_java", "free_port"]  # the last three re-exported for callers

DEFAULT_PORT = 7687
DEFAULT_HEAP = "1g"
DEFAULT_PAGECACHE = "512m"
STATE_FORMAT = 1
USER = "neo4j"
_INITIAL_PASSWORD = "neo4j"  # Neo4j's own default, replaced at first start

_JVM_FLAGS = [
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+DisableExplicitGC",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dlog4j2.disable.jmx=true",
    "-Djava.net.preferIPv4Stack=true",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--enable-native-access=ALL-UNNAMED",
]


_TX_LOG_SETTINGS = {  # the server's and neo4j-admin's (a bulk import writes the transaction log too)
    "db.tx_log.rotation.retention_policy": "2 files",
    "db.tx_log.rotation.size": "64M",
    "db.tx_log.preallocate": "false",
}
# Logs are pruned only at checkpoints: checkpoint by log volume written (checked every second),
# not by time or transaction count, so that big transactions cannot pile up gigabytes between two
# (PERIODIC and VOLUME are Community's policies; db.checkpoint.interval.time/tx apply to PERIODIC only)
_CHECKPOINT_SETTINGS = {
    "db.checkpoint": "VOLUME",
    "db.checkpoint.interval.volume": "128M",
}
# Once its databases have stopped (checkpointed), Neo4j's Bolt server waits out Netty's quiet period
# (5 s) on each of its two connectors before the process exits: 10 s of every stop, and of every
# bulk import's restart, doing nothing. With no quiet period a stop takes well under a second.
_SHUTDOWN_SETTINGS = {
    "internal.dbms.bolt.netty_server_shutdown_quiet_period": "0",
}
_PRIVATE = 0o077  # group and other permission bits: none on anything in a state dir


def _new_password() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class ServerState:
    """The content of ``state.json``; ``pid`` is None while the server is stopped."""

    format: int = STATE_FORMAT
    neo4j_version: str = NEO4J_VERSION
    user: str = USER
    password: str = field(default_factory=_new_password)
    password_set: bool = False  # the store has the password (until then it has Neo4j's initial one)
    pid: int | None = None
    port: int | None = None
    uri: str | None = None
    started_at: float | None = None
    heap: str = DEFAULT_HEAP  # the memory settings of the last start, reused by restarts
    pagecache: str = DEFAULT_PAGECACHE


@dataclass(frozen=True)
class ServerStatus:
    """What ``db status`` reports."""

    running: bool
    state_dir: str
    uri: str | None
    pid: int | None
    version: str
    store_bytes: int
    log: str


def _type_ok(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    return isinstance(value, allowed) or float in allowed and isinstance(value, int)


def _check_types(raw: dict[str, Any], source: Path) -> None:
    """ConfigError when a field of a state file has the wrong JSON type (never shows a value)."""
    for name, hint in typing.get_type_hints(ServerState).items():
        allowed = typing.get_args(hint) or (hint,)
        if name in raw and not _type_ok(raw[name], allowed):
            names = " or ".join("null" if kind is type(None) else kind.__name__ for kind in allowed)
            raise ConfigError(f"{source} is corrupt ({name} should be {names}, not {type(raw[name]).__name__}); "
                              "fix or move it away: the store beside it is kept")


def _tighten(top: Path, keep: tuple[str, ...] = ()) -> None:
    """Take group and other permissions away from ``top`` and everything under it but the
    folders named in ``keep`` directly under it."""
    for root, dirs, files in os.walk(top):
        if Path(root) == top:
            dirs[:] = [name for name in dirs if name not in keep]
        for name in [root, *(os.path.join(root, entry) for entry in files)]:
            with contextlib.suppress(FileNotFoundError, PermissionError):  # gone meanwhile; not ours
                mode = os.lstat(name).st_mode
                if mode & _PRIVATE and not stat.S_ISLNK(mode):
                    os.chmod(name, stat.S_IMODE(mode) & ~_PRIVATE)


def _private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can use (created 0700, or tightened to it)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:] if line.strip()) or "(empty log)"


class LocalServer:
    """The project's own Neo4j, one per state directory.

    >>> server = LocalServer(state_dir="/tmp/ca-doc")   # doctest: +SKIP
    >>> server.start().uri                               # doctest: +SKIP
    'bolt://127.0.0.1:7687'
    """

    def __init__(self, state_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> None:
        self.state_dir = Path(state_dir or paths.state_dir())
        self.jars = JarCache(Path(cache_dir) if cache_dir else None)

    # -- state file -------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def home(self) -> Path:
        return self.state_dir / "neo4j"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "console.log"

    def read_state(self) -> ServerState | None:
        """The state file, None for a fresh directory; ConfigError for a foreign or corrupt one,
        and for one that has lost the password the store was given."""
        state = self._load_state()
        if state is not None and state.password_set and not state.password:
            raise ConfigError(
                f"{self.state_file} has lost the password of the store beside it; "
                "`circuitatlas db reset-password` sets a new one and keeps the data"
            )
        return state

    def _load_state(self) -> ServerState | None:
        """:meth:`read_state` without the password check (for what mends or deletes the store)."""
        if not self.state_file.exists():
            ours = {".lock", "artifacts"}  # the lock, and analyses' images when the store lives elsewhere
            if self.state_dir.exists() and any(p.name not in ours for p in self.state_dir.iterdir()):
                raise ConfigError(
                    f"{self.state_dir} is not empty and is not a circuitatlas state dir (no state.json); "
                    "choose another with --state-dir or CIRCUITATLAS_STATE_DIR"
                )
            return None
        try:
            raw = json.loads(self.state_file.read_text())
            if not isinstance(raw, dict):
                raise ValueError(f"a JSON {type(raw).__name__}, not an object")
            if raw.get("password", "") is None:
                del raw["password"]  # null: as good as missing
            _check_types(raw, self.state_file)
            if not raw.get("password"):  # lost (refused by read_state), or none given to the store yet: a fresh one
                raw["password"] = "" if raw.get("password_set") else _new_password()
            state = ServerState(**raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{self.state_file} is corrupt ({exc}); fix or move it away: the store beside it is kept"
            ) from None
        if state.format != STATE_FORMAT:
            raise ConfigError(f"{self.state_file} has state format {state.format}, this version reads {STATE_FORMAT}")
        return state

    def _write_state(self, state: ServerState) -> None:
        _private_dir(self.state_dir)
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(state), handle, indent=2)
        os.chmod(tmp, 0o600)
        tmp.replace(self.state_file)

    def _owns(self, pid: int) -> bool:
        """True when pid is alive and is this state dir's Neo4j (not a recycled pid)."""
        if not pid_alive(pid):
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return True  # no /proc (macOS): trust the pid
        return str(self.home) in cmdline

    def running_state(self) -> ServerState | None:
        """The state of a running server, or None; a stale pid is cleaned on the way."""
        state = self.read_state()
        if state is None or state.pid is None:
            return None
        if self._owns(state.pid):
            return state
        state.pid = None
        state.uri = None
        self._write_state(state)
        return None

    # -- lifecycle ----------------------------------------------------------------------
    def start(
        self,
        port: int | None = None,
        heap: str = DEFAULT_HEAP,
        pagecache: str = DEFAULT_PAGECACHE,
        timeout: float = 180.0,
    ) -> tuple[ServerState, bool]:
        """Start the server (fetching jars first if needed) and wait until Bolt answers.

        Returns ``(state, started)``; ``started`` is False when it was already running.
        ``port=None`` takes 7687, or a free port when 7687 is taken.
        """
        with file_lock(self.state_dir / ".lock"):
            state = self.running_state()
            if state is not None:
                return state, False
            return self._start_unlocked(port, heap, pagecache, timeout), True

    def _start_unlocked(self, port: int | None, heap: str, pagecache: str, timeout: float) -> ServerState:
        state = self.read_state() or ServerState()
        self._reset_after_interrupted_import()
        if port is None:
            port = DEFAULT_PORT if port_free(DEFAULT_PORT) else free_port()
        elif not port_free(port):
            raise ServerError(f"port {port} on 127.0.0.1 is in use; pass another --port, or none to pick a free one")
        proc = self._launch(port, heap, pagecache)
        state.pid, state.port, state.uri = proc.pid, port, f"bolt://127.0.0.1:{port}"
        state.started_at, state.heap, state.pagecache = time.time(), heap, pagecache
        self._write_state(state)
        try:
            self._wait_ready(state, proc, timeout)
        except BaseException:
            self._terminate(proc.pid, 30.0)
            state.pid = state.uri = None
            self._write_state(state)
            raise
        return state

    def _prepare_home(self) -> None:
        """The state dir and Neo4j's folders, owner-only (an older state dir's are tightened)."""
        _private_dir(self.state_dir)
        for sub in ("data", "logs", "run", "plugins", "import"):
            _private_dir(self.home / sub)
        _tighten(self.state_dir, keep=("artifacts",))

    def _launch(self, port: int, heap: str, pagecache: str, auth: bool = True) -> subprocess.Popen:
        """Start Neo4j's process on 127.0.0.1:port (``auth=False``: without authentication, for
        :meth:`reset_password` only); returns at once."""
        java = find_java()
        lib = self.jars.ensure()
        self._prepare_home()
        settings = {
            "server.default_listen_address": "127.0.0.1",
            "server.default_advertised_address": "127.0.0.1",
            "server.bolt.listen_address": f"127.0.0.1:{port}",
            "server.bolt.advertised_address": f"127.0.0.1:{port}",
            "server.http.enabled": "false",
            "server.https.enabled": "false",
            "server.routing.listen_address": f"127.0.0.1:{free_port()}",
            "dbms.routing.enabled": "false",
            "dbms.security.auth_enabled": "true" if auth else "false",
            "dbms.usage_report.enabled": "false",
            "server.memory.pagecache.size": pagecache,
            "server.directories.data": str(self.home / "data"),
            "server.directories.logs": str(self.home / "logs"),
            "server.directories.run": str(self.home / "run"),
            "server.directories.plugins": str(self.home / "plugins"),
            "server.directories.import": str(self.home / "import"),
            **_TX_LOG_SETTINGS,
            **_CHECKPOINT_SETTINGS,
            **_SHUTDOWN_SETTINGS,
        }
        cmd = [java, f"-Xms{heap}", f"-Xmx{heap}", *_JVM_FLAGS, "-cp", f"{lib}/*",
               "org.neo4j.server.CommunityEntryPoint", f"--home-dir={self.home}"]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        with self._open_log("ab") as log:
            return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.home, start_new_session=True, umask=0o077)

    def _open_log(self, mode: str) -> typing.IO[Any]:
        """``console.log``, created 0600."""
        _private_dir(self.log_file.parent)
        return os.fdopen(os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), mode)

    def _wait_ready(self, state: ServerState, proc: subprocess.Popen, timeout: float) -> None:
        """Wait until Bolt answers with the state's password (set first, on a new store)."""
        from neo4j import GraphDatabase
        from neo4j.exceptions import AuthError

        def answered() -> bool:  # plain sessions, not execute_query: its retries would log noise while Neo4j boots
            password = state.password if state.password_set else _INITIAL_PASSWORD
            try:
                with GraphDatabase.driver(state.uri, auth=(state.user, password),
                                          notifications_min_severity="OFF") as driver:
                    if not state.password_set:
                        with driver.session(database="system") as session:
                            session.run("ALTER CURRENT USER SET PASSWORD FROM $old TO $new",
                                        old=_INITIAL_PASSWORD, new=state.password).consume()
                        state.password_set = True
                        self._write_state(state)
                        return False
                    with driver.session() as session:
                        session.run("RETURN 1").consume()
                    return True
            except AuthError:
                raise ServerError(
                    f"the store in {self.home} rejects the password kept in {self.state_file}; "
                    "`circuitatlas db reset-password` sets a new one and keeps the data"
                ) from None

        self._until(proc, state.port, timeout, answered)

    def _until(self, proc: subprocess.Popen, port: int | None, timeout: float, attempt: Callable[[], bool]) -> None:
        """Call ``attempt`` until it returns True, retrying while Neo4j boots (Bolt not up yet,
        database not available yet); ServerError when the process exits or time runs out."""
        from neo4j.exceptions import Neo4jError, ServiceUnavailable, SessionExpired

        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise ServerError(f"Neo4j exited with code {proc.returncode}: {_tail(self.log_file)}")
            if time.monotonic() > deadline:
                raise ServerError(f"Neo4j did not answer on bolt://127.0.0.1:{port} within {timeout:.0f}s: "
                                  f"{_tail(self.log_file)}")
            if not port_open(port):
                time.sleep(0.3)
                continue
            try:
                if attempt():
                    return
            except (ServiceUnavailable, SessionExpired):
                time.sleep(0.5)
            except Neo4jError as exc:
                if exc.code and ".Transient" in exc.code or "DatabaseUnavailable" in str(exc.code):
                    time.sleep(0.5)
                    continue
                raise ServerError(f"Neo4j answered with an error while starting: {exc.message}") from None

    @staticmethod
    def _terminate(pid: int, timeout: float) -> bool:
        """SIGTERM and wait; SIGKILL after timeout. True when it stopped cleanly."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not pid_alive(pid):
                return True
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return False

    def _halt(self, pid: int, timeout: float) -> None:
        """Stop our Neo4j process ``pid``; ServerError when it had to be killed."""
        if not self._terminate(pid, timeout):
            raise ServerError(f"Neo4j did not stop within {timeout:.0f}s and was killed: {_tail(self.log_file)}")

    def stop(self, timeout: float = 120.0) -> bool:
        """Shut the server down cleanly (SIGTERM, then wait). False when it was not running."""
        state = self.running_state()
        if state is None or state.pid is None:
            return False
        try:
            self._halt(state.pid, timeout)
        finally:
            state.pid = state.uri = None
            self._write_state(state)
        return True

    def reset_password(self, timeout: float = 180.0) -> ServerState:
        """Give the store a new password and keep its data, then start the server: what to do
        when the state file has lost the password (or holds one the store does not have).

        The server is stopped if it runs, started once with auth disabled (on 127.0.0.1 only, on
        a free port) to run ``ALTER USER``, stopped; only then is the new password written to
        the state file, and the server started as usual. Returns the running server's state.
        """
        with file_lock(self.state_dir / ".lock"):
            state = self._load_state()
            if state is None or not (self.home / "data").exists():
                raise ConfigError(f"no local Neo4j store in {self.state_dir} yet; `circuitatlas db start` makes one")
            if state.pid is not None and self._owns(state.pid):
                self._halt(state.pid, 120.0)
            state.uri = None
            password = _new_password()
            self._set_password_without_auth(state, password, timeout)
            state.pid, state.password, state.password_set = None, password, True
            self._write_state(state)
            port = state.port if state.port and port_free(state.port) else None
            return self._start_unlocked(port, state.heap, state.pagecache, timeout)

    def _set_password_without_auth(self, state: ServerState, password: str, timeout: float) -> None:
        """Start the store with auth disabled, give ``state.user`` the password, stop it. The
        state file names that process while it runs (its password unchanged), so that an
        interrupted reset leaves nothing running that ``db stop`` or another reset cannot find."""
        from neo4j import GraphDatabase

        port = free_port()
        proc = self._launch(port, state.heap, state.pagecache, auth=False)
        state.pid = proc.pid
        self._write_state(state)

        def altered() -> bool:
            with GraphDatabase.driver(f"bolt://127.0.0.1:{port}", auth=None, notifications_min_severity="OFF"
                                      ) as driver, driver.session(database="system") as session:
                session.run("ALTER USER $user SET PASSWORD $password CHANGE NOT REQUIRED",
                            user=state.user, password=password).consume()
            return True

        try:
            self._until(proc, port, timeout, altered)
        except BaseException:
            self._terminate(proc.pid, 30.0)
            raise
        self._halt(proc.pid, 120.0)

    # -- offline admin work (bulk import) ------------------------------------------------------
    @property
    def import_marker(self) -> Path:
        """Present while an offline import replaces the (empty) database; see :meth:`offline`."""
        return self.state_dir / "bulk-import.json"

    @contextlib.contextmanager
    def offline(self, before_stop: Callable[[], None] | None = None, timeout: float = 180.0
                ) -> Iterator[ServerState]:
        """Stop the running server for offline work on its store, under the state dir's lock,
        and start it again afterwards with the same port and memory settings, also when the
        work fails. ``before_stop`` runs under the lock while the server still answers (a
        last check; raising there stops nothing). Yields the state the server had."""
        with file_lock(self.state_dir / ".lock"):
            state = self.running_state()
            if state is None:
                raise ServerError(f"the local Neo4j in {self.state_dir} is not running")
            if before_stop is not None:
                before_stop()
            self.stop()
            try:
                yield state
            finally:
                self._start_unlocked(state.port, state.heap, state.pagecache, timeout)

    def run_admin(self, args: list[str], heap: str = "1g") -> subprocess.CompletedProcess:
        """Run ``neo4j-admin ARGS`` against this server's store (the server must be stopped)."""
        self._prepare_home()
        conf = _private_dir(self.home / "admin-conf")
        settings = {"server.directories.data": self.home / "data", "server.directories.logs": self.home / "logs",
                    **_TX_LOG_SETTINGS}
        fd = os.open(conf / "neo4j.conf", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("".join(f"{key}={value}\n" for key, value in settings.items()))
        env = {**os.environ, "NEO4J_HOME": str(self.home), "NEO4J_CONF": str(conf)}
        cmd = [find_java(), f"-Xmx{heap}", *_JVM_FLAGS, "-cp", f"{self.jars.ensure()}/*",
               "org.neo4j.cli.AdminTool", *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=self.home,
                              umask=0o077)

    def _reset_after_interrupted_import(self) -> None:
        """An offline import runs only into an empty database and leaves a marker until it
        has finished; a marker found at start means it did not finish: back to empty."""
        if not self.import_marker.exists():
            return
        for sub in ("databases", "transactions"):
            shutil.rmtree(self.home / "data" / sub / "neo4j", ignore_errors=True)
        with self._open_log("a") as log:
            log.write(f"circuitatlas: an offline import did not finish ({self.import_marker.read_text().strip()}); "
                      "the database was reset to empty, as it was before the import\n")
        self.import_marker.unlink()

    def status(self) -> ServerStatus:
        state = self.running_state()
        stored = self.read_state()
        return ServerStatus(
            running=state is not None,
            state_dir=str(self.state_dir),
            uri=state.uri if state else None,
            pid=state.pid if state else None,
            version=(stored or ServerState()).neo4j_version,
            store_bytes=dir_bytes(self.home / "data") if self.home.exists() else 0,
            log=str(self.log_file),
        )

    def wipe(self) -> None:
        """Stop the server and delete its store and logs; the next start makes a fresh store.
        Works on a state file that has lost its password too (the store goes anyway)."""
        state = self._load_state()
        if state is not None and state.pid is not None and self._owns(state.pid):
            self._halt(state.pid, 120.0)
        shutil.rmtree(self.home, ignore_errors=True)
        self.import_marker.unlink(missing_ok=True)
        if state is not None:
            self._write_state(ServerState(neo4j_version=state.neo4j_version))
