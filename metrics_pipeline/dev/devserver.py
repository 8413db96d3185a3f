"""`metrics-pipeline dev`: the whole pipeline on one machine, started and stopped together.

It starts the embedded PostgreSQL (unless a DSN is configured), migrates, starts a host collector
and a simulator of ingestion-job logs writing into the landing zone, local CloudWatch and WhaTap
doubles for the sources not configured, and runs `dg dev` (Dagster's webserver and daemon) with the
demo flag so that sensors and schedules start on.

`dg dev` runs in its own session (process group) so that we decide how it stops: on Ctrl-C or
SIGTERM we send SIGINT to the whole group, wait, and SIGKILL what is left, then stop the PostgreSQL
server if this command started it. A process started in the background by a shell inherits SIGINT
as ignored, so both our handlers and the child's default signal dispositions are set explicitly.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from metrics_pipeline.dev import demo_host
from metrics_pipeline.lib import settings, sources
from metrics_pipeline.lib.warehouse import bi, embedded_pg, migrate
from metrics_pipeline.lib.warehouse.db import Warehouse

log = logging.getLogger(__name__)

DAGSTER_PG_URL_ENV = "DAGSTER_PG_URL"


class _Stop(Exception):
    pass


def sqlalchemy_url(dsn: str) -> str:
    """A `postgresql+psycopg2://` URL for dagster-postgres from any libpq DSN (URI or key=value).

    dagster-postgres with SQLAlchemy 2.1 must name psycopg2 explicitly: a plain `postgresql://`
    selects psycopg 3, whose NOTIFY support dagster's event watcher does not work with.
    """
    parts = conninfo_to_dict(dsn)
    user = quote(str(parts.pop("user", "postgres")), safe="")
    password = parts.pop("password", None)
    auth = f"{user}:{quote(str(password), safe='')}@" if password else f"{user}@"
    host = str(parts.pop("host", ""))
    port = parts.pop("port", None)
    database = quote(str(parts.pop("dbname", "postgres")), safe="")
    query = dict(parts)
    netloc = host if host and not host.startswith("/") else ""
    if host.startswith("/"):
        query["host"] = host
    if port:
        if netloc:
            netloc = f"{netloc}:{port}"
        else:
            query["port"] = port
    url = f"postgresql+psycopg2://{auth}{netloc}/{database}"
    if query:
        url += "?" + "&".join(f"{k}={quote(str(v), safe='/')}" for k, v in query.items())
    return url


def default_signals() -> None:
    """preexec_fn for children: default SIGINT/SIGTERM (a background shell's child inherits them ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _raise_stop(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise _Stop()


def stop_process_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGINT the child's process group, then SIGKILL whatever is still alive after `timeout`.

    The host collector flushes its file and exits on SIGINT; dg dev shuts its services down."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        command = proc.args if isinstance(proc.args, str) else " ".join(map(str, proc.args))
        log.warning("%s did not stop in %.0f s; killing it", command, timeout)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def prepare_dagster_home(home: Path) -> Path:
    """DAGSTER_HOME for local runs: the repository's dagster.yaml (storage in PostgreSQL) and a
    workspace loading the code in-process under the location name `metrics_pipeline`."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(settings.project_root() / "dagster.yaml", home / "dagster.yaml")
    (home / "workspace.yaml").write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: metrics_pipeline.definitions\n"
        "      location_name: metrics_pipeline\n"
        f"      working_directory: {json.dumps(str(settings.project_root()))}\n"
    )
    return home


def dagster_command(home: Path, host: str, port: int) -> list[str]:
    """`dg dev` (Dagster's webserver and daemon, what Dagster recommends over `dagster dev`) on the
    workspace file `prepare_dagster_home` wrote.

    The workspace is named explicitly (`-w`), so dg dev starts exactly what `dagster dev -w` did.
    Without it, dg dev would build the same workspace entry from `[tool.dg]` in pyproject.toml, but it
    would also load the repository's `.env` (docker-compose's secrets, see .env.example) into the code
    location over the environment set here (its empty AWS keys over the local CloudWatch's), and run
    from the repository root, whose dagster.yaml is not this DAGSTER_HOME's (a warning every start)."""
    return [
        sys.executable, "-m", "dagster_dg_cli.cli", "dev",
        "-w", str(home / "workspace.yaml"),
        "--host", host, "--port", str(port),
    ]


def collector_command(landing: str) -> list[str]:
    """The host agent `make dev` runs on this machine: a demo host, so it belongs to the demo tenant."""
    return [sys.executable, "-m", "metrics_pipeline.cli", "collect", "--landing", landing,
            "--tenant", demo_host.DEMO_TENANT]


class LogSimulator(threading.Thread):
    """Writes simulated ingestion logs: the last hours at start, then what happened since, every few minutes."""

    def __init__(self, url: str, hours_back: float = 6.0, every: float = 300.0):
        super().__init__(name="simulate-logs", daemon=True)
        self.url, self.hours_back, self.every = url, hours_back, every
        self.stopped = threading.Event()

    def run(self) -> None:
        from datetime import datetime, timedelta, timezone

        from metrics_pipeline.dev.simulate_logs import simulate
        from metrics_pipeline.lib.landing import open_landing

        zone = open_landing(self.url, endpoint_url=os.environ.get(settings.S3_ENDPOINT_ENV))
        last = datetime.now(timezone.utc) - timedelta(hours=self.hours_back)
        while not self.stopped.is_set():
            now = datetime.now(timezone.utc)
            try:
                simulate(zone, last, now, seed=int(now.timestamp()), tag=now.strftime("%Y%m%dT%H%M%S"))
                last = now
            except Exception as exc:  # noqa: BLE001 - the demo goes on; the next round retries
                log.warning("simulated logs could not be written: %s", exc)
            self.stopped.wait(self.every)


class CloudWatchFeed(threading.Thread):
    """Publishes the demo CloudWatch's new minutes (`CloudWatchDemo.publish`) every minute while the demo runs."""

    def __init__(self, cloudwatch, since):
        super().__init__(name="demo-cloudwatch", daemon=True)
        self.cloudwatch, self.since = cloudwatch, since
        self.stopped = threading.Event()

    def run(self) -> None:
        from metrics_pipeline.dev import demo_cloudwatch as demo

        end = self.since
        while not self.stopped.wait(60):
            now = demo.now().replace(second=0, microsecond=0)
            try:
                self.cloudwatch.publish(end, now, seed=int(now.timestamp()))
                end = now
            except Exception as exc:  # noqa: BLE001 - the demo goes on; the next round retries
                if not self.stopped.is_set():
                    log.warning("the demo CloudWatch could not be fed: %s", exc)


def _start_demo_cloudwatch(env: dict):
    """The local CloudWatch seeded with the last `demo.HISTORY` (3 days: the anomaly detector learns
    the daily patterns from them, SPEC §12; the demo configuration's catch-up loads them all), a
    config pointing at it, fed every minute after (`demo_sources.start_cloudwatch_double`):
    (server, feed). Stop the feed, then the server."""
    from metrics_pipeline.dev import demo_cloudwatch as demo
    from metrics_pipeline.dev.demo_sources import start_cloudwatch_double

    end = demo.now().replace(second=0, microsecond=0)
    cloudwatch = start_cloudwatch_double(settings.state_dir() / "cloudwatch-demo.yaml", end - demo.HISTORY, end)
    feed = CloudWatchFeed(cloudwatch, since=end)
    feed.start()
    region = env.get("AWS_DEFAULT_REGION")
    env.update(cloudwatch.env)  # the config, and the local server's credentials (not AWS's)
    if region is not None:
        env["AWS_DEFAULT_REGION"] = region  # yours stays (an S3 landing zone may use it); the config names its own
    print(f"CloudWatch: local demo server at {cloudwatch.endpoint_url}, seeded with the last "
          f"{demo.HISTORY.days} days (an anomaly now and then)", flush=True)
    return cloudwatch, feed


#: `make dev`'s anomaly configuration when you have none: the defaults, except the demo CloudWatch's
#: Minimum, Maximum and SampleCount, which at one datapoint a minute repeat its Average (or are 1) and
#: would raise every anomaly three times.
DEMO_ANOMALIES = """# Written by make dev (config/anomalies.yaml absent): the defaults, but one statistic per CloudWatch metric.
exclude:
  - {source: cloudwatch, statistic: "Minimum|Maximum|SampleCount"}
"""


def _demo_anomalies_config(env: dict) -> None:
    """Point the anomaly detector at `DEMO_ANOMALIES` unless a configuration of yours exists."""
    from metrics_pipeline.lib.anomalies import config as anomaly_config

    if os.environ.get(anomaly_config.CONFIG_ENV) or anomaly_config.default_path().exists():
        return
    path = settings.state_dir() / "anomalies-demo.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DEMO_ANOMALIES)
    env[anomaly_config.CONFIG_ENV] = str(path)


def _start_demo_whatap(env: dict) -> object:
    """The WhaTap double on 127.0.0.1 and a config pointing at it (`demo_sources.start_whatap_double`)."""
    from metrics_pipeline.dev.demo_sources import start_whatap_double

    double, url, whatap_env = start_whatap_double(settings.state_dir() / "whatap-demo.yaml")
    env.update(whatap_env)
    print(f"WhaTap: local API double at {url}", flush=True)
    return double


def _ensure_bi_role(warehouse: Warehouse) -> None:
    """The read-only BI role for local dashboards: password from the environment, else a random
    one kept in `.metrics_pipeline/bi_password` (mode 0600); never printed."""
    password = os.environ.get(bi.PASSWORD_ENV)
    where = bi.PASSWORD_ENV
    if not password:
        path = settings.state_dir() / "bi_password"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(24))
        password, where = path.read_text().strip(), str(path)
    try:
        bi.ensure_role(warehouse, bi.DEFAULT_ROLE, password=password)
    except (PermissionError, psycopg.Error) as exc:
        print(f"BI role not created ({type(exc).__name__}); see `metrics-pipeline bi-role`", flush=True)
        return
    print(f"BI tools: user {bi.DEFAULT_ROLE} (read-only views {warehouse.schema}.v_*), password in {where}", flush=True)


API_PORT = 8000


def _start_api(warehouse: Warehouse, env: dict):
    """The push API on 127.0.0.1 for the demo tenant, and the demo app posting to it: (process, app)."""
    from metrics_pipeline.dev.demo_app import DemoApp, demo_key

    key_path = settings.state_dir() / "api_key"
    token = demo_key(warehouse, demo_host.DEMO_TENANT, key_path)
    api = subprocess.Popen([sys.executable, "-m", "metrics_pipeline.cli", "api", "--port", str(API_PORT)], env=env,
                           start_new_session=True, preexec_fn=default_signals)
    url = f"http://127.0.0.1:{API_PORT}"
    app = DemoApp(url, token)
    app.start()
    print(f"push API: {url} (OpenAPI at {url}/docs), tenant {demo_host.DEMO_TENANT}'s key in {key_path}:\n"
          f"  curl -X POST {url}/api/v1/measure -H \"X-PMETRICS-API-KEY: $(cat {key_path})\" "
          "-d '{\"name\": \"orders_processed\", \"value\": 1}'", flush=True)
    return api, app


def run_dev(host: str = "127.0.0.1", port: int = 3000) -> int:
    """Start everything `make dev` needs in the foreground; returns dg dev's exit code."""
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    server = None
    proc = None
    collector = None
    simulator = None
    busy = None
    alertmanager = None
    cloudwatch = None
    cloudwatch_feed = None
    whatap = None
    api = None
    demo_app = None
    kafka = None
    try:
        dsn = os.environ.get(settings.DSN_ENV)
        env = dict(os.environ)
        if dsn:
            print(f"using the configured warehouse ({settings.DSN_ENV})", flush=True)
            env.setdefault(DAGSTER_PG_URL_ENV, sqlalchemy_url(dsn))
        else:
            embedded = embedded_pg.EmbeddedPostgres(embedded_pg.default_data_dir())
            started_here = not embedded.is_running()
            embedded.start()
            server = embedded if started_here else None  # attach to somebody else's server, never stop it
            dsn = embedded.dsn(embedded_pg.WAREHOUSE_DB)
            env[settings.DSN_ENV] = dsn
            env.setdefault(DAGSTER_PG_URL_ENV, embedded.sqlalchemy_url(embedded_pg.DAGSTER_DB))
            print(f"embedded PostgreSQL in {embedded_pg.default_data_dir()}", flush=True)
        warehouse = Warehouse(dsn, settings.schema_name())
        applied = migrate.migrate(warehouse)
        print(f"warehouse migrated ({len(applied)} new migration(s))", flush=True)
        _ensure_bi_role(warehouse)
        home = prepare_dagster_home(settings.state_dir() / "dagster_home")
        env["DAGSTER_HOME"] = str(home)
        env[settings.DEMO_ENV] = "1"
        landing = settings.landing_url()
        env[settings.LANDING_ENV] = landing
        collector = subprocess.Popen(
            collector_command(landing), env=env, start_new_session=True, preexec_fn=default_signals,
        )
        print(f"host collector writing to {landing} (tenant {demo_host.DEMO_TENANT})", flush=True)
        simulator = LogSimulator(landing)
        simulator.start()
        busy = demo_host.BusyHost(landing)
        busy.start()
        print(f"demo host {demo_host.BUSY_HOST}: CPU > 80 % at :10-:23 and > 95 % at :16-:18 every hour", flush=True)
        if not os.environ.get("METRICS_PIPELINE_ALERTMANAGER_URL"):
            alertmanager = demo_host.start_alertmanager(settings.state_dir())
            if alertmanager is not None:
                env["METRICS_PIPELINE_ALERTMANAGER_URL"] = "http://127.0.0.1:9093"
                print("Alertmanager: http://127.0.0.1:9093 (alerts are delivered there)", flush=True)
        if sources.configured("cloudwatch"):
            print("CloudWatch: using the configured accounts", flush=True)
        else:
            cloudwatch, cloudwatch_feed = _start_demo_cloudwatch(env)
            _demo_anomalies_config(env)
        if sources.configured("whatap"):
            print("WhaTap: using the configured projects", flush=True)
        else:
            whatap = _start_demo_whatap(env)
        api, demo_app = _start_api(warehouse, env)
        from metrics_pipeline.dev import kafka_demo

        kafka = kafka_demo.start(env, landing, default_signals)
        print(f"starting Dagster on http://{host}:{port} (Ctrl-C stops everything)", flush=True)
        proc = subprocess.Popen(
            dagster_command(home, host, port), env=env, cwd=home, start_new_session=True, preexec_fn=default_signals
        )
        while proc.poll() is None:
            time.sleep(0.5)
        return proc.returncode
    except _Stop:
        print("\nstopping...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if simulator is not None:
            simulator.stopped.set()
        if demo_app is not None:
            demo_app.stopped.set()
        if kafka is not None:
            kafka[2].stopped.set()
        if busy is not None:
            busy.stopped.set()
        if cloudwatch_feed is not None:
            cloudwatch_feed.stopped.set()
        if cloudwatch is not None:
            cloudwatch.stop()
        if whatap is not None:
            whatap.stop()
        for child in (proc, collector, alertmanager, api, *(kafka[1::-1] if kafka else ())):
            if child is not None:
                stop_process_group(child)  # the Kafka consumer commits before its broker stops
        if server is not None:
            server.stop()
            print("embedded PostgreSQL stopped", flush=True)
