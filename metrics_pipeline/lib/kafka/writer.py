"""Where the consumer's files become durable before their offsets are committed.

Local landing zone: in the zone itself (`files.write_once`: temporary file, fsync, link to its name,
fsync of the directory). S3: in a local spool directory the same way, then uploaded by a background
thread and deleted from the spool; files a killed consumer left in the spool are uploaded when the
next one starts (SPEC §12: with S3, durable means fsync'd in the local spool, as for the host agent
and the push API). An upload that fails is retried with a growing pause; the spool keeps the file.
Uploading the same file twice (two consumers sharing a spool) writes the same bytes to the same key.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from metrics_pipeline.lib.kafka import files
from metrics_pipeline.lib.landing import LandingZone, LocalLanding

log = logging.getLogger(__name__)


class LandingWriter:
    """Writes Kafka landing files durably; `write` returns once the file survives a crash."""

    def __init__(self, zone: LandingZone, spool_dir: str | Path):
        self.zone = zone
        self._remote = None if isinstance(zone, LocalLanding) else zone
        self._local = zone if isinstance(zone, LocalLanding) else LocalLanding(Path(spool_dir))
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = None
        for prefix in files.PREFIXES.values():
            removed = files.remove_stale_temporaries(self._local.root / prefix)
            if removed:
                log.info("removed %d temporary file(s) a killed consumer left in %s", removed, self._local.root / prefix)
        if self._remote is not None:
            self._thread = threading.Thread(target=self._uploads, name="kafka-landing-upload", daemon=True)
            self._thread.start()

    @property
    def url(self) -> str:
        return self.zone.url

    def write(self, key: str, data: bytes) -> str | None:
        """Make `data` durable under `key`; returns the key written (tagged if `key` holds other bytes,
        see `files.write_once`), None if a file there holds these bytes already."""
        written = files.write_once(self._local.root, self._local.path(key), data)
        if written is None:
            return None
        if self._remote is not None:
            self._wake.set()
        return written.relative_to(self._local.root).as_posix()

    def pending_uploads(self) -> list[Path]:
        """Spool files not uploaded yet (S3 only)."""
        if self._remote is None:
            return []
        return sorted(p for prefix in files.PREFIXES.values()
                      for p in (self._local.root / prefix).rglob(f"*{files.SUFFIX}") if p.is_file())

    def upload_pending(self) -> int:
        """Upload what the spool holds; returns how many files are left (their upload failed)."""
        left = 0
        for path in self.pending_uploads():
            key = path.relative_to(self._local.root).as_posix()
            try:
                self._remote.write(key, path.read_bytes())
                path.unlink(missing_ok=True)
            except FileNotFoundError:
                continue  # another consumer sharing the spool uploaded it
            except Exception as exc:  # noqa: BLE001 - kept in the spool, retried
                log.warning("upload of %s failed (%s: %s); kept in the spool, retrying", key, type(exc).__name__, exc)
                left += 1
        return left

    def _uploads(self) -> None:
        pause = 1.0
        while not self._stop.is_set():
            self._wake.wait(pause)
            self._wake.clear()
            try:
                left = self.upload_pending()
            except Exception:  # noqa: BLE001 - the thread must outlive any one failure
                log.exception("uploading the Kafka spool failed; retrying")
                left = 1
            pause = min(30.0, pause * 2) if left else 1.0

    def close(self, timeout: float = 30.0) -> None:
        """Stop the upload thread after one last pass (what fails stays in the spool for the next start)."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self.upload_pending()
