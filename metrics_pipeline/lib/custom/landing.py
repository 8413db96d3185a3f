"""The durable landing writer the push API acknowledges through, and the reader the loaders use.

`PushWriter.write(tenant, kind, items)` returns once the batch is durable: its lines are appended to
the current file of (tenant, kind, receipt minute) with one write() and one fdatasync(). Files are

    custom/<kind>/<YYYY-MM-DD>/<HH>/<tenant dir>/<tenant dir>-<YYYYmmddTHHMM>-<writer>-<seq>.jsonl

by receipt time (UTC). `tenant_dir` keeps letters, digits and `._-` and writes any other byte as
`%XX` (a long name is cut and tagged with a digest), so two tenants never share a directory. The
writer id is `<host>-<pid>-<random>`: the random part keeps a restarted process (same host, same
pid, as in a container) off the files of its predecessor. Files are created with O_EXCL and the
directory fsync'd, so a writer only ever appends to a file it created itself.

Format: one JSON object a line per item, then a commit line closing the batch:

    {"tenant":"acme","name":"orders","value":12.0,"ts":"2026-01-05T13:00:00.123456Z","metadata":{"shop":"eu"},"unit":"","received_at":"2026-01-05T13:00:01.000002Z"}
    {"tenant":"acme","name":"deploy","ts":"...","metadata":{},"text":"v2.3 rolled out","received_at":"..."}
    {"committed":2}

The commit line carries the batch's item count. A writer killed inside a write() leaves some lines
of its last batch and maybe half a line: with no commit line after them they are a torn tail, which
`read_landing` skips (nothing unacknowledged is half-stored). After a failed write the file is cut
back to its last commit and left: the next batch goes to a new file, never after a torn tail.

Concurrent batches for one file are group-committed: while one thread is in write()+fdatasync(),
the batches arriving meanwhile queue up and the next leader writes them all with one write() and one
fdatasync(). Each batch's lines stay contiguous, and a batch is acknowledged only by the fdatasync()
that covered it (so an fsync error is never reported to one batch and swallowed for another).

Keys, the line format and the reader live in `files.py` (re-exported here).

Local landing zone: files are written in the zone itself. S3: in the spool directory, then uploaded
by a background thread once finished (at the end of their minute, or after `upload_after`), and
deleted from the spool; with `wait_for_upload` each batch is its own file, uploaded before `write`
returns. A writer holds an flock on `.writers/<writer>.lock` in the spool while it lives: files of a
writer whose lock is free (it crashed) are uploaded by the next writer that starts or looks.
"""

from __future__ import annotations

import dataclasses
import fcntl
import itertools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from metrics_pipeline.lib.custom.config import ApiConfig
from metrics_pipeline.lib.custom.files import (  # noqa: F401 - the reader re-exported for the loaders
    KINDS,
    PREFIX,
    SAFE_CHARS,
    CorruptLanding,
    Kind,
    LandingRead,
    encode_batch,
    file_key,
    hour_of_key,
    hour_prefix,
    read_items,
    read_landing,
    rfc3339,
    tenant_dir,
    writer_of,
)
from metrics_pipeline.lib.custom.validate import Event, Measure
from metrics_pipeline.lib.landing import LandingZone, LocalLanding, fsync_dir, make_dirs_durably, open_landing

log = logging.getLogger(__name__)

#: the longest tenant (in characters), as for every other tenant the project knows
MAX_TENANT_CHARS = 200
_LEFTOVER_SCAN_SECONDS = 300.0
_HOUSEKEEPING_SECONDS = 0.5


class LandingUnavailable(RuntimeError):
    """The landing zone (or the spool) could not make a batch durable: nothing of it is acknowledged."""


# -- one open file ---------------------------------------------------------------------------------

class _Moved(Exception):
    """The file no longer takes batches (finished or broken): pick the current file again."""


@dataclasses.dataclass(eq=False)
class _Slot:
    data: bytes
    done: bool = False
    error: LandingUnavailable | None = None


class _File:
    """A file this writer created and appends to; batches are group-committed (see the module doc)."""

    def __init__(self, key: str, path: Path, fd: int, minute: int, on_closed):
        self.key, self.path, self.fd, self.minute = key, path, fd, minute
        self.opened = time.monotonic()
        self.size = 0  # bytes durable so far (always a batch boundary)
        self.state = "open"  # open -> finished | broken -> closed
        self._on_closed = on_closed
        self._cond = threading.Condition()
        self._pending: list[_Slot] = []
        self._leading = False

    def commit(self, data: bytes) -> None:
        """Append `data` and make it durable; _Moved if the file takes no more batches."""
        slot = _Slot(data)
        with self._cond:
            if self.state != "open":
                raise _Moved
            self._pending.append(slot)
            while not slot.done:
                if self.state == "broken":  # an earlier group failed: go to a new file
                    self._pending.remove(slot)
                    self._close_if_idle()
                    raise _Moved
                if self._leading:
                    self._cond.wait()
                    continue
                group, self._pending = self._pending, []
                self._leading = True
                self._cond.release()
                try:
                    error = self._append(b"".join(s.data for s in group) if len(group) > 1 else group[0].data)
                finally:
                    self._cond.acquire()
                    self._leading = False
                for s in group:
                    s.done, s.error = True, error
                if error is not None:
                    self.state = "broken"
                self._cond.notify_all()
            self._close_if_idle()
        if slot.error is not None:
            raise slot.error

    def _append(self, data: bytes) -> LandingUnavailable | None:
        try:
            view, written = memoryview(data), 0
            while written < len(data):
                written += os.write(self.fd, view[written:])
            os.fdatasync(self.fd)
        except OSError as exc:
            try:
                os.ftruncate(self.fd, self.size)  # leave no half batch behind (a full disk frees it)
            except OSError:
                pass  # the tail stays torn: readers skip it, and nothing is appended after it
            return LandingUnavailable(f"cannot write landing file {self.key}: {exc.strerror or exc}")
        self.size += len(data)
        return None

    def finish(self) -> None:
        """Take no more batches; the file is closed once the batches already queued are written."""
        with self._cond:
            if self.state == "open":
                self.state = "finished"
            self._close_if_idle()

    def _close_if_idle(self) -> None:
        if self.state in ("finished", "broken") and not self._leading and not self._pending:
            self.state = "closed"
            try:
                os.close(self.fd)
            except OSError:
                pass
            if self._on_closed is not None:
                self._on_closed(self)


# -- the writer ------------------------------------------------------------------------------------

class PushWriter:
    """Makes pushed batches durable in the landing zone; thread-safe, one per API process.

    Args:
        config: the API configuration (`landing`, `spool_dir`, `s3_endpoint_url`, `wait_for_upload`,
            `upload_after`).
        clock: epoch seconds now (tests move it); receipt times and file minutes come from it.
        zone: the landing zone, when the caller already has one (default: opened from `config.landing`).
    """

    def __init__(self, config: ApiConfig, *, clock=time.time, zone: LandingZone | None = None):
        self.config = config
        self._clock = clock
        zone = zone or open_landing(config.landing, endpoint_url=config.s3_endpoint_url)
        self._remote = None if isinstance(zone, LocalLanding) else zone
        self._files_zone = zone if isinstance(zone, LocalLanding) else LocalLanding(Path(config.spool_dir))
        self.root = self._files_zone.root
        host = "".join(c if c in SAFE_CHARS and c != "." else "_" for c in socket.gethostname())[:64] or "host"
        self.writer_id = f"{host}-{os.getpid()}-{secrets.token_hex(3)}"
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._current: dict[tuple[str, str], _File] = {}
        self._uploads: list[_File] = []  # finished spool files waiting for their upload
        self._upload_lock = threading.Lock()
        self._next_upload_try = 0.0
        self._registration = None  # the flock'd lock file that says this writer lives
        self._register_lock = threading.Lock()
        self._closed = False
        self._next_leftover_scan = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._housekeeping, name=f"push-writer-{self.writer_id}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The landing zone's URL (where the loaders read)."""
        return (self._remote or self._files_zone).url

    def write(self, tenant: str, kind: Kind, items: Sequence[Measure] | Sequence[Event]) -> str:
        """Make `items` durable as one batch of `tenant`; return the landing key of its file.

        Raises:
            LandingUnavailable: the zone (or spool) could not write the batch; nothing of it is stored
                as committed, and the next batch goes to a new file.
            ValueError, TypeError: a tenant, kind or item the caller should never have passed.
        """
        _check_batch(tenant, kind, items)
        if self._closed:
            raise RuntimeError("this PushWriter is closed")
        received = self._clock()
        data = encode_batch(tenant, kind, items,
                            datetime.fromtimestamp(received, timezone.utc))
        if self._remote is not None and self.config.wait_for_upload:
            return self._write_and_upload(tenant, kind, received, data)
        minute = int(received // 60)
        for _ in range(8):
            file = self._file_for(tenant, kind, received, minute)
            try:
                file.commit(data)
                return file.key
            except _Moved:
                continue
        raise LandingUnavailable("the landing files kept failing; nothing of the batch was written")

    def probe(self) -> None:
        """Raise LandingUnavailable unless a file can be created and fsync'd where batches go (`/readyz`)."""
        path = self.root / f".tmp-probe-{self.writer_id}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b"probe\n")
                os.fdatasync(fd)
            finally:
                os.close(fd)
            path.unlink()
        except OSError as exc:
            raise LandingUnavailable(f"landing zone {self.root} is not writable: {exc.strerror or exc}") from None

    def close(self) -> None:
        """Finish every open file; with S3, upload what the spool holds (what fails stays for the next writer)."""
        self._closed = True
        self._stop.set()
        self._thread.join(timeout=30)
        with self._lock:
            files, self._current = list(self._current.values()), {}
        for file in files:
            file.finish()
        if self._remote is not None:
            self._upload_finished(force=True)
            self._upload_leftovers()
            if self._registration is not None:
                self._registration.close()  # releases the flock: leftovers become anyone's to upload
                self._registration = None

    def __enter__(self) -> PushWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- files

    def _file_for(self, tenant: str, kind: str, received: float, minute: int) -> _File:
        with self._lock:
            file = self._current.get((tenant, kind))
            if file is not None and file.state == "open" and file.minute == minute:
                return file
            if file is not None:
                file.finish()
            file = self._open(tenant, kind, received, minute, on_closed=self._finished)
            self._current[(tenant, kind)] = file
            return file

    def _open(self, tenant: str, kind: str, received: float, minute: int, on_closed) -> _File:
        """A new file of this writer (O_EXCL: never one that exists), its directory entry durable."""
        if self._remote is not None:
            self._register()
        for _ in range(1000):
            key = file_key(kind, tenant, received, self.writer_id, next(self._seq))
            path = self._files_zone.path(key)
            try:
                make_dirs_durably(path.parent)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                continue
            except OSError as exc:
                raise LandingUnavailable(f"cannot create landing file {key}: {exc.strerror or exc}") from None
            try:
                fsync_dir(path.parent)
            except OSError as exc:
                os.close(fd)
                path.unlink(missing_ok=True)
                raise LandingUnavailable(f"cannot create landing file {key}: {exc.strerror or exc}") from None
            return _File(key, path, fd, minute, on_closed)
        raise LandingUnavailable("no free landing file name")  # 1,000 taken names: not a real case

    def _finished(self, file: _File) -> None:
        """A file closed: with S3 it waits for its upload; locally it is where loaders find it."""
        if self._remote is not None:
            with self._upload_lock:
                self._uploads.append(file)

    def _write_and_upload(self, tenant: str, kind: str, received: float, data: bytes) -> str:
        file = self._open(tenant, kind, received, int(received // 60), on_closed=None)
        try:
            file.commit(data)
        finally:
            file.finish()
        try:
            self._upload(file.key, file.path)
        except Exception as exc:  # noqa: BLE001 - the batch is in the spool; it goes up later
            with self._upload_lock:
                self._uploads.append(file)
            raise LandingUnavailable(f"upload of {file.key} failed ({type(exc).__name__}); "
                                     "kept in the spool and retried, but not acknowledged") from None
        return file.key

    # -- S3: uploads and the spool

    def _register(self) -> None:
        """Hold `.writers/<writer>.lock` before creating any spool file, so no one uploads an open one."""
        with self._register_lock:
            if self._registration is not None:
                return
            directory = self.root / ".writers"
            try:
                directory.mkdir(parents=True, exist_ok=True)
                fh = open(directory / f"{self.writer_id}.lock", "a+b")
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                raise LandingUnavailable(f"cannot register in the spool {self.root}: {exc.strerror or exc}") from None
            self._registration = fh

    def _upload(self, key: str, path: Path) -> None:
        data = path.read_bytes()
        if data:
            self._remote.write(key, data)
        path.unlink(missing_ok=True)

    def _upload_finished(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_upload_try:
            return
        with self._upload_lock:
            queued, self._uploads = self._uploads, []
        failed = []
        for file in queued:
            try:
                self._upload(file.key, file.path)
            except Exception as exc:  # noqa: BLE001 - kept, retried with backoff
                log.warning("upload of %s failed (%s); kept in the spool, retrying", file.key, type(exc).__name__)
                failed.append(file)
        if failed:
            with self._upload_lock:
                self._uploads[:0] = failed
            self._next_upload_try = now + 5.0

    def _upload_leftovers(self) -> None:
        """Upload the spool files of writers that are gone (their lock is free), then forget them."""
        base = self.root / PREFIX
        if not base.is_dir():
            return
        by_writer: dict[str, list[Path]] = {}
        for path in sorted(base.rglob("*.jsonl")):
            writer = writer_of(path)
            if writer is not None and writer != self.writer_id:
                by_writer.setdefault(writer, []).append(path)
        for writer, paths in by_writer.items():
            lock_path = self.root / ".writers" / f"{writer}.lock"
            try:
                lock_path.parent.mkdir(exist_ok=True)
                fh = open(lock_path, "a+b")  # no lock file: that writer is long gone
            except OSError:
                continue
            with fh:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # that writer lives: its files are its own
                try:
                    for path in paths:
                        key = path.relative_to(self.root).as_posix()
                        if path.exists():
                            self._upload(key, path)
                except Exception as exc:  # noqa: BLE001 - the next scan retries
                    log.warning("upload of a leftover spool file failed (%s); retrying later", type(exc).__name__)
                    continue
                lock_path.unlink(missing_ok=True)

    def _housekeeping(self) -> None:
        """Finish files whose minute is over (or, with S3, older than `upload_after`); upload."""
        upload_after = self.config.upload_after.total_seconds()
        while not self._stop.wait(_HOUSEKEEPING_SECONDS):
            try:
                minute = int(self._clock() // 60)
                with self._lock:
                    done = [k for k, f in self._current.items() if f.minute != minute or f.state != "open"
                            or (self._remote is not None and time.monotonic() - f.opened >= upload_after)]
                    for k in done:
                        self._current.pop(k).finish()
                if self._remote is not None:
                    self._upload_finished()
                    if time.monotonic() >= self._next_leftover_scan:
                        self._next_leftover_scan = time.monotonic() + _LEFTOVER_SCAN_SECONDS
                        self._upload_leftovers()
            except Exception:  # housekeeping must outlive any one failure
                log.exception("landing housekeeping failed; retrying")


def _check_batch(tenant: str, kind: str, items: Sequence) -> None:
    if not isinstance(tenant, str) or not tenant or len(tenant) > MAX_TENANT_CHARS or "\x00" in tenant:
        raise ValueError(f"tenant must be 1-{MAX_TENANT_CHARS} characters without NUL, got {tenant!r:.80}")
    try:
        tenant.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("tenant must not contain unpaired UTF-16 surrogates") from None
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not items:
        raise ValueError("a batch holds at least one item")
    expected = Measure if kind == "measures" else Event
    if not all(type(item) is expected for item in items):
        raise TypeError(f"a {kind} batch holds {expected.__name__} items only")
