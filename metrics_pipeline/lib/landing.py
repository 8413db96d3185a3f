"""The landing zone: where agents and jobs drop files, a local directory or an S3 prefix.

One small interface, two backends:
* `list(prefix)` returns objects sorted by key with size, mtime and an etag (what changed);
  `list_new(prefix, cursor)` returns those after a `(mtime, key)` cursor, oldest first, so a
  sensor can walk thousands of files across ticks without missing or repeating one;
* `read(key)` returns bytes, refusing anything larger than `max_object_bytes` (a hostile or broken
  producer cannot exhaust memory); `read_many` hands such refusals back per object, so one bad
  object never stops a batch;
* `write(key, data)` is atomic: locally write to a temporary name in the same directory, fsync,
  rename, fsync the directory; on S3 a PUT is atomic by nature;
* `delete(key)`. Nothing here deletes on its own: files are removed only by retention, after the
  data they hold has been committed.

Keys are relative POSIX paths. Keys that would leave the zone (`..`, absolute, backslashes, NUL)
are refused, and so are local paths that a symlink (of the file or of a directory on the way) leads
out of the zone, so a file name chosen by a producer can never make us read or write elsewhere.
Temporary files (`.tmp-` prefix) are never listed.

A listing never hands out a key the warehouse cannot store or index, because every key ends up in
`landing_files`, `quarantine` and sensor cursors: a name that is not UTF-8 (a latin-1
`r\\xe9sultats.jsonl` on a local disk), holds a NUL (possible on S3) or is longer than
`MAX_KEY_BYTES` is listed under a printable stand-in (`\\xNN` escapes; a long one is cut and tagged
with a digest) and carries `refused`, the reason. Such a stand-in contains a backslash, so `read`,
`write` and `delete` refuse it like any key leaving the zone: one odd name is quarantined or counted
by the loaders and never stops the others. A local directory the walk cannot enter is listed the
same way (key ending in `/`), rather than its files silently missing.

boto3 is imported only by the S3 backend: the host agent writing locally stays small.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

TMP_PREFIX = ".tmp-"
DEFAULT_MAX_OBJECT_BYTES = 256 * 1024 * 1024
#: The longest key the zone hands out as is: S3's own limit, and well inside PostgreSQL's btree
#: entry limit (about 2,700 bytes) for the `landing_files` and `quarantine` keys.
MAX_KEY_BYTES = 1024
#: GetObject errors that belong to one object and that retrying will not fix: an object archived to
#: Glacier. (AccessDenied is left to fail loudly: it is far more often a policy or credentials
#: mistake that denies every object, and refusing each one would quarantine the whole zone quietly.)
_UNREADABLE_S3_CODES = ("InvalidObjectState",)
_BAD_KEY = re.compile(r"(^/)|(\\)|(\x00)|(^|/)\.\.?(/|$)")


class LandingError(RuntimeError):
    """A landing-zone operation failed (missing object, object too large, bad key)."""


class RefusedObject(LandingError):
    """An object the zone will not read, whatever is retried: a key leaving the zone, or too large.

    `reason` says why without naming the object (a quarantine row names its file already)."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


@dataclasses.dataclass(frozen=True, order=True)
class LandingObject:
    """One file in the landing zone. Ordered by (mtime, key): the order `list_new` walks."""

    mtime: float
    key: str
    size: int = dataclasses.field(compare=False)
    etag: str = dataclasses.field(compare=False)
    #: Why the zone will not read this object, found while listing (its name is not UTF-8, holds
    #: a NUL, is too long; a directory that cannot be listed); None for an ordinary object.
    refused: str | None = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True)
class Cursor:
    """Position of a walk over the landing zone: everything up to (mtime, key) has been seen."""

    mtime: float = 0.0
    key: str = ""

    def encode(self) -> str:
        return f"{self.mtime!r}|{self.key}"

    @classmethod
    def decode(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        mtime, _, key = text.partition("|")
        return cls(float(mtime), key)


def check_key(key: str) -> str:
    """Return `key` if it stays inside the landing zone, else raise LandingError."""
    if not isinstance(key, str) or not key or _BAD_KEY.search(key):
        raise RefusedObject(f"landing key {key!r} is not a relative path inside the landing zone",
                            "file name is not a relative path inside the landing zone")
    return key


def listed_key(name: str) -> tuple[str, str | None]:
    """The key a listing hands out for the object called `name`, and why it is refused (None: it is not).

    A name PostgreSQL cannot store (not UTF-8: a local file name comes back from the OS with
    surrogate escapes; or holding a NUL) is shown with `\\xNN` escapes; a name longer than
    `MAX_KEY_BYTES` is cut and tagged with its length and a digest, so two never collide. Every
    stand-in contains a backslash, which `check_key` refuses: nothing can read, write or delete
    through it by accident.
    """
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = name.encode("utf-8", "surrogateescape")  # the file name's own bytes
        except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
            raw = name.encode("utf-8", "backslashreplace")
        shown = raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
        return _clip_key(shown), "file name is not valid UTF-8 (shown with \\x escapes): rename the file to load it"
    if "\x00" in name:
        return _clip_key(name.replace("\x00", "\\x00")), "file name contains a NUL character (shown as \\x00)"
    if len(encoded) > MAX_KEY_BYTES:
        return _clip_key(name), f"file name is {len(encoded)} bytes long, more than the {MAX_KEY_BYTES} allowed"
    return name, None


def _clip_key(key: str) -> str:
    """`key` cut to fit `MAX_KEY_BYTES`, tagged (after a backslash) with its length and a digest."""
    encoded = key.encode("utf-8")
    if len(encoded) <= MAX_KEY_BYTES:
        return key
    head = encoded[: MAX_KEY_BYTES - 64].decode("utf-8", "ignore")
    return f"{head}\\...[{len(encoded)} bytes, sha256 {hashlib.sha256(encoded).hexdigest()[:16]}]"


class LandingZone(Protocol):
    url: str

    def list(self, prefix: str = "") -> list[LandingObject]: ...
    def read(self, key: str) -> bytes: ...
    def write(self, key: str, data: bytes) -> None: ...
    def delete(self, key: str) -> None: ...


def list_new(zone: LandingZone, prefix: str, cursor: Cursor, limit: int | None = None) -> list[LandingObject]:
    """Objects under `prefix` after `cursor` in (mtime, key) order, at most `limit` of them."""
    new = sorted(o for o in zone.list(prefix) if (o.mtime, o.key) > (cursor.mtime, cursor.key))
    return new[:limit] if limit is not None else new


@dataclasses.dataclass
class LocalLanding:
    """A directory on this machine (the default: `.metrics_pipeline/landing`)."""

    root: Path
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser().absolute()
        self._real_root = self.root.resolve()  # once: every read, write and delete checks against it

    @property
    def url(self) -> str:
        return str(self.root)

    def path(self, key: str) -> Path:
        path = (self.root / check_key(key)).absolute()
        if (not path.is_relative_to(self.root) or path.is_symlink()
                or not path.resolve().is_relative_to(self._real_root)):  # a symlinked directory on the way
            raise RefusedObject(f"landing key {key!r} resolves outside the landing zone",
                                "file resolves outside the landing zone (a symbolic link on the way)")
        return path

    def list(self, prefix: str = "") -> list[LandingObject]:
        base = self.root / prefix if prefix else self.root
        if prefix:
            check_key(prefix.rstrip("/"))
        # A prefix may end mid-name ("host/2026-01-0"): walk its directory and filter.
        walk_from = base if base.is_dir() else base.parent
        if not walk_from.is_dir():
            return []
        found = []
        unlistable: list[OSError] = []
        for dirpath, dirnames, filenames in os.walk(walk_from, onerror=unlistable.append):
            dirnames[:] = [d for d in dirnames if not d.startswith(TMP_PREFIX)]
            for name in filenames:
                if name.startswith(TMP_PREFIX):
                    continue
                full = os.path.join(dirpath, name)
                key = os.path.relpath(full, self.root).replace(os.sep, "/")
                if prefix and not key.startswith(prefix):
                    continue
                try:
                    st = os.lstat(full)
                except FileNotFoundError:
                    continue  # removed while we walked
                if not stat.S_ISREG(st.st_mode):  # symbolic links, FIFOs, sockets, devices
                    continue
                key, refused = listed_key(key)
                found.append(LandingObject(st.st_mtime, key, st.st_size, f"{st.st_size}-{st.st_mtime_ns}", refused))
        for error in unlistable:  # a directory we may not enter: say so rather than miss its files
            if isinstance(error, FileNotFoundError) or not error.filename:
                continue  # removed while we walked
            key = os.path.relpath(error.filename, self.root).replace(os.sep, "/") + "/"
            if prefix and not key.startswith(prefix):
                continue
            try:
                st = os.lstat(error.filename)
            except OSError:
                continue
            key, _ = listed_key(key)
            found.append(LandingObject(st.st_mtime, key, 0, f"dir-{st.st_mtime_ns}",
                                       f"directory cannot be listed ({error.strerror})"))
        return sorted(found, key=lambda o: o.key)

    def read(self, key: str) -> bytes:
        path = self.path(key)
        try:
            with open(path, "rb") as fh:
                data = fh.read(self.max_object_bytes + 1)
        except FileNotFoundError:
            raise LandingError(f"landing object {key!r} does not exist in {self.root}") from None
        except (PermissionError, IsADirectoryError) as exc:
            # Retrying will not help until someone fixes the file: refuse it, do not stop the batch.
            raise RefusedObject(f"landing object {key!r} cannot be read ({exc.strerror})",
                                f"file cannot be read ({exc.strerror})") from None
        if len(data) > self.max_object_bytes:
            raise RefusedObject(f"landing object {key!r} is larger than {self.max_object_bytes} bytes",
                                f"file is larger than {self.max_object_bytes} bytes")
        return data

    def write(self, key: str, data: bytes) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durably(directory: Path) -> None:
    """Create `directory` and its missing parents, fsyncing the parent of each one created, so that a
    file written and fsynced inside it survives a crash with its path (a durable landing write)."""
    missing = []
    while not directory.is_dir() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for new in reversed(missing):
        try:
            new.mkdir()
        except FileExistsError:
            continue
        fsync_dir(new.parent)


@dataclasses.dataclass
class S3Landing:
    """An S3 prefix (`s3://bucket/prefix`), for many hosts writing to one place."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region_name: str | None = None
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
    _client: object = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region_name,
                config=Config(retries={"mode": "standard", "max_attempts": 5}),
            )
        return self._client

    def _full(self, key: str) -> str:
        base = self.prefix.strip("/")
        return f"{base}/{key}" if base else key

    def list(self, prefix: str = "") -> list[LandingObject]:
        if prefix:
            check_key(prefix.rstrip("/"))
        strip = len(self._full("")) if self.prefix.strip("/") else 0
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._full(prefix)):
            for item in page.get("Contents", []):
                key = item["Key"][strip:]
                if key.rsplit("/", 1)[-1].startswith(TMP_PREFIX) or key.endswith("/"):
                    continue
                key, refused = listed_key(key)  # S3 keys are UTF-8, but may hold a NUL
                found.append(
                    LandingObject(item["LastModified"].timestamp(), key, item["Size"], item["ETag"].strip('"'), refused)
                )
        return sorted(found, key=lambda o: o.key)

    def read(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(check_key(key)))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise LandingError(f"landing object {key!r} does not exist in {self.url}") from None
            if code in _UNREADABLE_S3_CODES:  # one object we may not read must not stop the others
                raise RefusedObject(f"landing object {key!r} cannot be read ({code})", f"file cannot be read ({code})") from None
            raise
        if response["ContentLength"] > self.max_object_bytes:
            response["Body"].close()
            raise RefusedObject(f"landing object {key!r} is larger than {self.max_object_bytes} bytes",
                                f"file is larger than {self.max_object_bytes} bytes")
        return response["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._full(check_key(key)), Body=data)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._full(check_key(key)))


def open_landing(url: str, *, endpoint_url: str | None = None, region_name: str | None = None) -> LandingZone:
    """`s3://bucket/prefix` or a local directory path."""
    if url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        if not bucket:
            raise ValueError(f"landing zone URL {url!r} has no bucket")
        return S3Landing(bucket, prefix, endpoint_url=endpoint_url, region_name=region_name)
    if "://" in url:
        raise ValueError(f"landing zone URL {url!r}: use a local path or s3://bucket/prefix")
    return LocalLanding(Path(url))



def read_many(zone: LandingZone, items: Iterable[str | LandingObject], workers: int = 8):
    """Yield (key, bytes or RefusedObject) for `items` (keys or listed objects) in order, fetching up
    to `workers` at a time.

    Object-store reads are latency-bound (one request each): an hour of a hundred hosts is 6,000
    small objects, which would take minutes one by one. Local reads gain little but lose nothing.
    An object the zone refuses (a producer's file name leaving the zone or not UTF-8, an object over
    the size limit or that we may not read) comes back as its RefusedObject for the caller to
    quarantine or count: one hostile file must not stop every file of the batch. A listed object
    that carries `refused` is not fetched at all. Other errors (missing object, S3 down) raise.
    At most `2 * workers` objects are fetched ahead of the consumer, so memory stays bounded by
    that many objects, whatever the batch's size.
    """
    def read(item: str | LandingObject) -> bytes | RefusedObject:
        if isinstance(item, LandingObject):
            if item.refused:
                return RefusedObject(f"landing object {item.key!r} is refused: {item.refused}", item.refused)
            item = item.key
        try:
            return zone.read(item)
        except RefusedObject as exc:
            return exc

    def key_of(item: str | LandingObject) -> str:
        return item.key if isinstance(item, LandingObject) else item

    items = list(items)
    if len(items) <= 1 or isinstance(zone, LocalLanding):
        for item in items:
            yield key_of(item), read(item)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        ahead: deque = deque()
        for item in items:
            ahead.append((key_of(item), pool.submit(read, item)))
            if len(ahead) >= 2 * workers:
                key, future = ahead.popleft()
                yield key, future.result()
        while ahead:
            key, future = ahead.popleft()
            yield key, future.result()
