"""Configuration of the Kafka consumer (`config/kafka.yaml`), validated with errors that name the key.

Which topics to read and what each holds (`format`: job-log records in the §2.4 schema, measures or
events in the §2.5 schema), the consumer group, the client settings (bootstrap servers, SASL/TLS:
any librdkafka property under `client`), and how files are cut. A missing file means the defaults:
topics `job-logs` (job-log records) and `measures` (measures of tenant `default`), group `metrics-pipeline`, brokers at `localhost:9092`.

Secrets never sit in the file: a password, secret or private key under `client` is refused, and
`secrets_from_env` names the environment variable each one is read from when the consumer starts
(a variable that is unset is an error naming it). The bootstrap servers come from `--bootstrap`,
else `METRICS_PIPELINE_KAFKA_BOOTSTRAP`, else the file (SPEC §12).

Each topic of measures or events is bound to one tenant: its items are that tenant's, and a message
naming another tenant is quarantined (SPEC §12). Job-log records name their company themselves.
The group timeouts default short (session 10 s), so that a restarted consumer is back within seconds.
"""

from __future__ import annotations

import logging
import os
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from metrics_pipeline.lib import settings, yaml_config
from metrics_pipeline.lib.yaml_config import ConfigError

CONFIG_ENV = "METRICS_PIPELINE_KAFKA_CONFIG"
BOOTSTRAP_ENV = "METRICS_PIPELINE_KAFKA_BOOTSTRAP"
FORMATS = ("job_logs", "measures", "events")
Format = Literal["job_logs", "measures", "events"]
DEFAULT_TENANT = "default"
MiB = 1024 * 1024
#: Kafka's own rule for topic names
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
#: librdkafka properties the consumer sets itself (exactly-once depends on them)
_OWN_SETTINGS = frozenset({
    "bootstrap.servers", "metadata.broker.list", "group.id", "enable.auto.commit", "enable.auto.offset.store",
    "auto.commit.enable", "session.timeout.ms", "max.poll.interval.ms", "on_commit", "error_cb", "stats_cb",
})
_SECRET = re.compile(r"(password|secret|\.pem$|^ssl\.key\.|sasl\.oauthbearer\.config)", re.IGNORECASE)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(value):
    return yaml_config.parse_duration(value)


class Topic(_Strict):
    """One topic and what its messages hold."""

    name: str
    format: Format
    #: measures and events: the tenant every item of the topic belongs to (required)
    tenant: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _TOPIC.match(value) or value in (".", ".."):
            raise ValueError(f"{value!r} is not a Kafka topic name (letters, digits, '.', '_', '-'; at most 249)")
        return value

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str | None) -> str | None:
        if value is not None and (not value or len(value) > 200 or "\x00" in value):
            raise ValueError("a tenant is 1-200 characters without NUL")
        return value

    @model_validator(mode="after")
    def _bound(self) -> Topic:
        if self.format == "job_logs" and self.tenant is not None:
            raise ValueError("a job_logs topic takes no tenant: each record names its company (Entreprise)")
        if self.format != "job_logs" and self.tenant is None:
            raise ValueError(f"a {self.format} topic is bound to one tenant: set `tenant`")
        return self


def _default_topics() -> list[Topic]:
    return [Topic(name="job-logs", format="job_logs"), Topic(name="measures", format="measures", tenant=DEFAULT_TENANT)]


class KafkaConfig(_Strict):
    bootstrap_servers: str = Field(default="localhost:9092", min_length=1)
    group_id: str = Field(default="metrics-pipeline", min_length=1, max_length=255)
    topics: list[Topic] = Field(default_factory=_default_topics, min_length=1)
    #: librdkafka properties (security.protocol, sasl.mechanism, sasl.username, ssl.ca.location, ...)
    client: dict[str, str | int | float | bool] = Field(default_factory=dict)
    #: librdkafka property -> environment variable holding its value (sasl.password, ...)
    secrets_from_env: dict[str, str] = Field(default_factory=dict)
    session_timeout: timedelta = timedelta(seconds=10)
    max_poll_interval: timedelta = timedelta(seconds=30)
    #: a file is cut at the end of each minute, or this long after its first message if shorter
    flush_interval: timedelta = timedelta(seconds=60)
    #: a file is cut early once it holds this many bytes
    max_file_bytes: int = Field(default=64 * MiB, ge=1024, le=256 * MiB)
    #: a message value larger than this is quarantined (an excerpt is kept) (SPEC §12: 1 MB)
    max_message_bytes: int = Field(default=1_000_000, ge=1024, le=64 * MiB)
    #: the landing zone: a local directory or s3://bucket/prefix (default: the project's)
    landing: str = Field(default_factory=settings.landing_url, min_length=1)
    s3_endpoint_url: str | None = Field(default_factory=lambda: os.environ.get(settings.S3_ENDPOINT_ENV) or None)
    #: with an S3 landing zone: where files are fsync'd before their offsets are committed, then uploaded
    spool_dir: str = Field(default_factory=lambda: str(settings.state_dir() / "spool" / "kafka"), min_length=1)

    @field_validator("session_timeout", "max_poll_interval", "flush_interval", mode="before")
    @classmethod
    def _durations(cls, value):
        return _duration(value)

    @field_validator("flush_interval")
    @classmethod
    def _flush(cls, value: timedelta) -> timedelta:
        if not timedelta(milliseconds=100) <= value <= timedelta(minutes=1):
            raise ValueError("flush_interval must be between 0.1s and 60s (files never span two minutes)")
        return value

    @field_validator("topics")
    @classmethod
    def _unique(cls, value: list[Topic]) -> list[Topic]:
        names = [t.name for t in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"topic(s) listed twice: {twice}")
        return value

    @field_validator("client")
    @classmethod
    def _client(cls, value: dict) -> dict:
        for key in value:
            if key in _OWN_SETTINGS:
                raise ValueError(f"{key!r} is set by the consumer itself (use the keys of config/kafka.example.yaml)")
            if _SECRET.search(key):
                raise ValueError(f"{key!r} is a secret: name its environment variable under secrets_from_env")
        return value

    @field_validator("secrets_from_env")
    @classmethod
    def _secrets(cls, value: dict) -> dict:
        for key, variable in value.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", variable):
                raise ValueError(f"{key}: {variable!r} is not an environment variable name")
        return value

    @model_validator(mode="after")
    def _timeouts(self) -> KafkaConfig:
        if self.max_poll_interval < self.session_timeout:
            raise ValueError("max_poll_interval must be at least session_timeout")
        return self

    def topic(self, name: str) -> Topic:
        return next(t for t in self.topics if t.name == name)

    def client_settings(self, bootstrap: str | None = None) -> dict:
        """librdkafka properties for a client of this configuration, secrets read from the environment.

        Raises:
            ConfigError: a variable named in `secrets_from_env` is not set.
        """
        out = {"bootstrap.servers": resolve_bootstrap(bootstrap, self), **self.client}
        for key, variable in self.secrets_from_env.items():
            secret = os.environ.get(variable)
            if not secret:
                raise ConfigError(f"kafka config: secrets_from_env.{key}: environment variable {variable} is not set")
            out[key] = secret
        return out

    def consumer_settings(self, bootstrap: str | None = None) -> dict:
        """The consumer's properties: offsets are stored and committed by the consumer, never automatically."""
        return {
            **self.client_settings(bootstrap),
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": self.client.get("auto.offset.reset", "earliest"),
            "session.timeout.ms": int(self.session_timeout.total_seconds() * 1000),
            "heartbeat.interval.ms": max(100, int(self.session_timeout.total_seconds() * 1000) // 5),
            "max.poll.interval.ms": int(self.max_poll_interval.total_seconds() * 1000),
            # A broker that is down is retried about once a second, never in a tight loop: librdkafka's
            # default (100 ms) meant eight connection attempts a second to a refused port.
            "reconnect.backoff.ms": self.client.get("reconnect.backoff.ms", 1000),
            "reconnect.backoff.max.ms": self.client.get("reconnect.backoff.max.ms", 10_000),
            "logger": librdkafka_logger(),
        }


class _OncePerMinute(logging.Filter):
    """librdkafka logs a connection failure at every attempt; the consumer says itself, once, that the
    brokers are unreachable. One line per librdkafka facility (FAIL, ...) a minute is kept."""

    def __init__(self, every_s: float = 60.0):
        super().__init__()
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        facility = str(record.msg).split(" ", 1)[0]
        now = time.monotonic()
        if now - self._last.get(facility, -self.every_s) < self.every_s:
            return False
        self._last[facility] = now
        return True


def librdkafka_logger() -> logging.Logger:
    """The logger librdkafka's own messages go to (`metrics_pipeline.kafka.librdkafka`), rate-limited."""
    logger = logging.getLogger("metrics_pipeline.kafka.librdkafka")
    if not any(isinstance(f, _OncePerMinute) for f in logger.filters):
        logger.addFilter(_OncePerMinute())
    return logger


def resolve_bootstrap(cli: str | None, config: KafkaConfig) -> str:
    """`--bootstrap`, else `METRICS_PIPELINE_KAFKA_BOOTSTRAP`, else the configured servers (SPEC §12)."""
    return cli or os.environ.get(BOOTSTRAP_ENV) or config.bootstrap_servers


def config_path() -> Path:
    """`$METRICS_PIPELINE_KAFKA_CONFIG`, else `config/kafka.yaml` in the project."""
    configured = os.environ.get(CONFIG_ENV)
    return Path(configured) if configured else settings.project_root() / "config" / "kafka.yaml"


def load_config(path: Path | None = None) -> KafkaConfig:
    """Read and validate the configuration; a missing file gives the defaults.

    Raises:
        ConfigError: naming the file and every bad key.
    """
    return yaml_config.load(KafkaConfig, path or config_path())
