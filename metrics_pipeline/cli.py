"""`metrics-pipeline`: the command line for operators (plain argparse, no Dagster import at start-up).

    metrics-pipeline db start|stop|status|dsn   the embedded PostgreSQL
    metrics-pipeline migrate [--target N]       apply pending warehouse migrations
    metrics-pipeline dev                        PostgreSQL + migrations + dg dev (make dev)
    metrics-pipeline collect                    the host agent: psutil samples into the landing zone
    metrics-pipeline simulate-logs              realistic ingestion-job logs into the landing zone
    metrics-pipeline retention [--dry-run]      drop partitions past their tier's retention
    metrics-pipeline tenants create|list        tenants of the HTTP API
    metrics-pipeline keys create|list|revoke    their API keys (a token is shown once, at creation)
    metrics-pipeline api [--host H] [--port P]  the HTTP API: applications push measures and events
    metrics-pipeline anomalies score IN.csv --output OUT.csv   anomaly scores of a timestamp,value series
    metrics-pipeline kafka consume [--until-idle S]  Kafka topics into the landing zone (config/kafka.yaml)

Imports are lazy, per command: the host agent must not pay for psycopg, pandas or Dagster.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _cmd_db(args: argparse.Namespace) -> int:
    from metrics_pipeline.lib.warehouse import embedded_pg

    server = embedded_pg.EmbeddedPostgres(args.data_dir or embedded_pg.default_data_dir())
    if args.action == "start":
        server.start()
        print(server.dsn())
    elif args.action == "stop":
        server.stop()
    elif args.action == "status":
        running = server.is_running()
        print(f"{'running' if running else 'stopped'}: {server.data_dir}")
        return 0 if running else 3
    elif args.action == "dsn":
        print(server.dsn())
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from metrics_pipeline.lib.warehouse import embedded_pg, migrate

    warehouse = embedded_pg.resolve_warehouse()
    applied = migrate.migrate(warehouse, target=args.target)
    if applied:
        print(f"applied migration(s) {', '.join(map(str, applied))} to schema {warehouse.schema}")
    else:
        print(f"schema {warehouse.schema} is up to date")
    return 0


def _cmd_dev(args: argparse.Namespace) -> int:
    import importlib.util

    missing = [m for m in ("moto", "pgserver") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"metrics-pipeline dev runs local doubles that need {', '.join(missing)}: install the development "
              "extra with `pip install -e '.[dev]'` (or run `make dev`, which does)", file=sys.stderr)
        return 2
    from metrics_pipeline.dev.devserver import run_dev

    return run_dev(host=args.host, port=args.port)


def _cmd_collect(args: argparse.Namespace) -> int:
    from metrics_pipeline.lib import settings
    from metrics_pipeline.lib.host.agent import CollectorConfig, run_collector

    config = CollectorConfig(
        landing=args.landing or settings.landing_url(),
        host=args.host_name or __import__("socket").gethostname(),
        cpu_interval=args.cpu_interval,
        network_interval=args.network_interval,
        disk_io_interval=args.disk_io_interval,
        disk_usage_interval=args.disk_usage_interval,
        duration=args.duration,
        spool_dir=args.spool_dir,
        endpoint_url=args.endpoint_url,
        include_loopback=args.include_loopback,
        tenant=args.tenant,
    )
    stats = run_collector(config, stats_file=args.stats_file)
    print(f"collected {stats.samples} samples in {stats.lines} lines ({stats.ticks} ticks)", file=sys.stderr)
    return 0


def _cmd_simulate_logs(args: argparse.Namespace) -> int:
    from datetime import datetime, timedelta, timezone

    from metrics_pipeline.dev.simulate_logs import simulate
    from metrics_pipeline.lib import settings
    from metrics_pipeline.lib.landing import open_landing

    def when(text: str) -> datetime:
        ts = datetime.fromisoformat(text)
        return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)

    span = timedelta(hours=args.hours)
    if args.start:
        start = when(args.start)
        end = when(args.end) if args.end else start + span
    else:
        end = when(args.end) if args.end else datetime.now(timezone.utc)
        start = end - span
    if args.to == "kafka":
        from metrics_pipeline.dev.simulate_kafka import publish
        from metrics_pipeline.lib.kafka.config import load_config

        stats = publish(load_config(), start, end, bootstrap=args.bootstrap, topic=args.topic,
                        jobs_per_hour=args.jobs_per_hour, seed=args.seed, bad_rate=args.bad_rate)
        print(f"published {stats.records} records ({stats.failures} failed runs, {stats.bad_records} broken) "
              f"in {stats.messages} messages to topic {stats.topic}")
        return 0
    zone = open_landing(args.landing or settings.landing_url(), endpoint_url=args.endpoint_url)
    stats = simulate(zone, start, end, jobs_per_hour=args.jobs_per_hour, seed=args.seed, bad_rate=args.bad_rate)
    print(f"wrote {stats.records} records ({stats.failures} failed runs, {stats.bad_records} broken records) "
          f"in {stats.files} files to {zone.url}")
    return 0


def _cmd_retention(args: argparse.Namespace) -> int:
    from metrics_pipeline.lib import settings
    from metrics_pipeline.lib.landing import open_landing
    from metrics_pipeline.lib.warehouse import embedded_pg, migrate, retention

    warehouse = embedded_pg.resolve_warehouse()
    migrate.migrate(warehouse)
    dropped = retention.apply(warehouse, dry_run=args.dry_run)
    verb = "would drop" if args.dry_run else "dropped"
    for item in dropped:
        print(f"{verb} {item.partition} ({item.table}, data before {item.upper.isoformat()})")
    print(f"{verb} {len(dropped)} partition(s)")
    zone = open_landing(settings.landing_url(), endpoint_url=os.environ.get(settings.S3_ENDPOINT_ENV))
    files = retention.apply_landing(warehouse, zone, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(files)} committed landing file(s) ({sum(f.size for f in files):,} bytes)")
    return 0


def _cmd_bi_role(args: argparse.Namespace) -> int:
    from metrics_pipeline.lib.warehouse import bi, embedded_pg, migrate

    password = os.environ.get(bi.PASSWORD_ENV)
    if not password and not args.keep_password:
        print(f"set {bi.PASSWORD_ENV} to the password of role {args.name!r} (or pass --keep-password)", file=sys.stderr)
        return 2
    warehouse = embedded_pg.resolve_warehouse()
    migrate.migrate(warehouse)
    tenants = None if args.all_tenants is None and not args.tenant else ([] if args.all_tenants else args.tenant)
    bi.ensure_role(warehouse, args.name, password=password or None, tenants=tenants)
    scope = "all tenants" if tenants == [] else (f"tenants {', '.join(tenants)}" if tenants else "tenants unchanged")
    print(f"role {args.name}: read-only on the {warehouse.schema}.v_* views ({scope}); password from {bi.PASSWORD_ENV}")
    return 0


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain text table; control characters in cells (a tenant name may hold them) are escaped."""
    def cell(text: str) -> str:
        return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)

    shown = [[cell(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in shown) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in shown)


def _when(ts) -> str:
    from datetime import UTC

    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"


def _keys_warehouse():
    from metrics_pipeline.lib.warehouse import embedded_pg, migrate

    warehouse = embedded_pg.resolve_warehouse()
    migrate.migrate(warehouse)
    return warehouse


def _cmd_tenants(args: argparse.Namespace) -> int:
    from metrics_pipeline.lib import api_keys

    if args.action == "create":
        api_keys.validate_tenant(args.name)  # before starting or migrating a database
        created = api_keys.create_tenant(_keys_warehouse(), args.name)
        print(f"{'created tenant' if created else 'tenant already exists:'} {args.name}")
        return 0
    tenants = api_keys.list_tenants(_keys_warehouse())
    if not tenants:
        print("no tenants yet: create one with `metrics-pipeline tenants create NAME`")
        return 0
    print(_table(["TENANT", "CREATED", "ACTIVE KEYS"],
                 [[t.name, _when(t.created_at), str(t.active_keys)] for t in tenants]))
    return 0


def _cmd_api(args: argparse.Namespace) -> int:
    import psycopg

    from metrics_pipeline.api import server
    from metrics_pipeline.lib.warehouse import embedded_pg, migrate

    logging.getLogger().setLevel(logging.INFO)
    warehouse = embedded_pg.resolve_warehouse()
    try:
        migrate.migrate(warehouse)
    except psycopg.OperationalError as exc:  # the landing zone is the buffer: start, keys load once it answers
        logging.warning("the warehouse does not answer (%s): starting anyway, keys load when it does",
                        type(exc).__name__)
    server.serve(warehouse, host=args.host, port=args.port, workers=args.workers, buffer=args.buffer,
                 bootstrap=args.bootstrap)
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    from metrics_pipeline.lib import api_keys

    if args.action == "create":
        scopes = api_keys.validate_scopes(",".join(args.scope) if args.scope else api_keys.DEFAULT_SCOPES)
        new = api_keys.create_key(_keys_warehouse(), args.tenant, scopes, note=args.note)
        # The token alone on stdout (TOKEN=$(metrics-pipeline keys create ...)); everything else on stderr.
        print(new.token)
        print(f"created key {new.key_id} for tenant {args.tenant} (scopes {','.join(scopes)}). The token above "
              "will not be shown again: store it now (only a hash of it is kept).", file=sys.stderr)
        return 0
    if args.action == "revoke":
        api_keys.validate_key_id(args.key_id)
        if api_keys.revoke_key(_keys_warehouse(), args.key_id):
            print(f"revoked key {args.key_id}: running API servers refuse it within 5 s")
        else:
            print(f"key {args.key_id} was already revoked")
        return 0
    keys = api_keys.list_keys(_keys_warehouse(), args.tenant)
    if not keys:
        print("no API keys yet: create one with `metrics-pipeline keys create --tenant NAME`")
        return 0
    print(_table(["KEY ID", "TENANT", "SCOPES", "STATUS", "CREATED", "REVOKED", "NOTE"],
                 [[k.key_id, k.tenant, ",".join(k.scopes), "active" if k.active else "revoked",
                   _when(k.created_at), _when(k.revoked_at), k.note or ""] for k in keys]))
    return 0


def _cmd_anomalies(args: argparse.Namespace) -> int:
    from metrics_pipeline.lib.anomalies import csvio

    series = csvio.read_series(args.input)
    scores, config = csvio.score_file(series, step=args.step)
    csvio.write_scores(args.output, series, scores, explain=args.explain)
    print(f"scored {len(series.stamps):,} rows of {args.input} (step {config.step:g} s): "
          f"{int((scores.score >= args.threshold).sum())} at or above {args.threshold:g}; wrote {args.output}",
          file=sys.stderr)
    return 0


def _cmd_kafka(args: argparse.Namespace) -> int:
    import signal
    from pathlib import Path

    from metrics_pipeline.lib.kafka.config import load_config
    from metrics_pipeline.lib.kafka.consumer import KafkaIngest
    from metrics_pipeline.lib.warehouse import embedded_pg, migrate

    logging.getLogger().setLevel(logging.INFO)
    config = load_config(Path(args.config) if args.config else None)
    warehouse = None
    try:  # the landing zone is the buffer: consume even while the warehouse (health rows only) is away
        warehouse = embedded_pg.resolve_warehouse()
        migrate.migrate(warehouse)
    except Exception as exc:  # noqa: BLE001 - said, and retried at each commit
        logging.warning("the warehouse does not answer (%s): consuming anyway; health rows are written once it does",
                        type(exc).__name__)
    ingest = KafkaIngest(config, bootstrap=args.bootstrap, warehouse=warehouse)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: ingest.stop())
    stats = ingest.run(until_idle=args.until_idle)
    print(f"consumed {stats.messages} message(s) ({stats.bytes:,} bytes, {stats.refused} refused) into {stats.files} "
          f"file(s); {stats.commits} commit(s)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metrics-pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="manage the embedded PostgreSQL server")
    db.add_argument("action", choices=["start", "stop", "status", "dsn"])
    db.add_argument("--data-dir", help="cluster directory (default: .metrics_pipeline/pg)")
    db.set_defaults(func=_cmd_db)

    mig = sub.add_parser("migrate", help="apply pending warehouse migrations (idempotent)")
    mig.add_argument("--target", type=int, help="stop after this migration version")
    mig.set_defaults(func=_cmd_migrate)

    dev = sub.add_parser("dev", help="run PostgreSQL, migrations, the demo sources and dg dev; Ctrl-C stops all")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=int(os.environ.get("METRICS_PIPELINE_DEV_PORT", "3000")))
    dev.set_defaults(func=_cmd_dev)

    col = sub.add_parser("collect", help="sample this host with psutil into the landing zone")
    col.add_argument("--landing", help="directory or s3://bucket/prefix (default $METRICS_PIPELINE_LANDING or .metrics_pipeline/landing)")
    col.add_argument("--host-name", help="host name to record (default: this machine's)")
    col.add_argument("--tenant", help="tenant owning this host: label `tenant` of every sample (the host "
                                      "configuration's rule for this host, if any, wins)")
    col.add_argument("--duration", type=float, help="stop after this many seconds (default: run until SIGTERM/SIGINT)")
    col.add_argument("--cpu-interval", type=float, default=1.0, help="CPU, load, memory, swap (s)")
    col.add_argument("--network-interval", type=float, default=1.0, help="network counters (s)")
    col.add_argument("--disk-io-interval", type=float, default=5.0, help="disk I/O counters (s)")
    col.add_argument("--disk-usage-interval", type=float, default=30.0, help="disk usage per mount (s)")
    col.add_argument("--include-loopback", action="store_true", help="also report the lo interface")
    col.add_argument("--spool-dir", help="local spool for an S3 landing zone (default ~/.metrics_pipeline/spool)")
    col.add_argument("--endpoint-url", default=os.environ.get("METRICS_PIPELINE_S3_ENDPOINT_URL"), help="S3 endpoint (tests, MinIO)")
    col.add_argument("--stats-file", help="write tick statistics (JSON) here on exit")
    col.set_defaults(func=_cmd_collect)

    sim = sub.add_parser("simulate-logs", help="write realistic ingestion-job log files into the landing zone")
    sim.add_argument("--landing", help="directory or s3://bucket/prefix (default: the configured landing zone)")
    sim.add_argument("--start", help="ISO start (default: --hours before --end)")
    sim.add_argument("--end", help="ISO end (default: --hours after --start, or now)")
    sim.add_argument("--hours", type=float, default=24.0, help="length of the period unless both ends are given")
    sim.add_argument("--jobs-per-hour", type=int, default=120, help="job runs per hour (volume)")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--bad-rate", type=float, default=0.005, help="share of deliberately broken records")
    sim.add_argument("--endpoint-url", default=os.environ.get("METRICS_PIPELINE_S3_ENDPOINT_URL"))
    sim.add_argument("--to", choices=["landing", "kafka"], default="landing",
                     help="files in the landing zone (default), or job records published to a Kafka topic")
    sim.add_argument("--bootstrap", help="Kafka brokers (default $METRICS_PIPELINE_KAFKA_BOOTSTRAP, then config/kafka.yaml)")
    sim.add_argument("--topic", help="the job-log topic (default: the first job_logs topic of config/kafka.yaml)")
    sim.set_defaults(func=_cmd_simulate_logs)

    ret = sub.add_parser("retention", help="drop partitions past their retention (config/retention.yaml)")
    ret.add_argument("--dry-run", action="store_true", help="list what would be dropped, drop nothing")
    ret.set_defaults(func=_cmd_retention)

    bir = sub.add_parser("bi-role", help="create or update the read-only BI login role (password from $METRICS_PIPELINE_BI_PASSWORD)")
    bir.add_argument("--name", default="metrics_bi", help="login role name (default metrics_bi)")
    bir.add_argument("--tenant", action="append", default=[], help="restrict the role to this tenant (repeatable)")
    bir.add_argument("--all-tenants", action="store_true", default=None, help="lift any tenant restriction")
    bir.add_argument("--keep-password", action="store_true", help="update grants without setting a password")
    bir.set_defaults(func=_cmd_bi_role)

    ten = sub.add_parser("tenants", help="tenants of the HTTP API (the names the BI tenant filter uses)")
    ten_sub = ten.add_subparsers(dest="action", required=True)
    ten_create = ten_sub.add_parser("create", help="create a tenant (no-op if it exists)")
    ten_create.add_argument("name", help="1-200 characters, as the series label `tenant`")
    ten_sub.add_parser("list", help="list tenants with their number of active keys")
    ten.set_defaults(func=_cmd_tenants)

    keys = sub.add_parser("keys", help="API keys of the HTTP API (stored hashed; a token is shown once)")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    keys_create = keys_sub.add_parser("create", help="create a key: its token on stdout, shown this once")
    keys_create.add_argument("--tenant", required=True, help="an existing tenant (`tenants create`)")
    keys_create.add_argument("--scope", action="append", help="write, read or write,read (default write; repeatable)")
    keys_create.add_argument("--note", help="what the key is for, shown by `keys list`")
    keys_list = keys_sub.add_parser("list", help="list keys (ids, never tokens)")
    keys_list.add_argument("--tenant", help="only this tenant's keys")
    keys_revoke = keys_sub.add_parser("revoke", help="revoke a key: running API servers refuse it within 5 s")
    keys_revoke.add_argument("key_id", help="the 12-character id `keys list` shows (not the token)")
    keys.set_defaults(func=_cmd_keys)

    api = sub.add_parser("api", help="the HTTP API: push measures and events with a tenant's key (config/api.yaml)")
    api.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    api.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    api.add_argument("--workers", type=int, default=1, help="worker processes (default 1; one per core to use them all)")
    api.add_argument("--buffer", choices=("landing", "kafka"), default="landing",
                     help="where a batch is durable before its 202: landing files (default), or the measures/events "
                          "topic bound to the tenant in config/kafka.yaml (docs/kafka.md)")
    api.add_argument("--bootstrap", help="with --buffer kafka: the brokers (wins over $METRICS_PIPELINE_KAFKA_BOOTSTRAP "
                                         "and config/kafka.yaml)")
    api.set_defaults(func=_cmd_api)

    ano = sub.add_parser("anomalies", help="anomaly detection (docs/anomalies.md)")
    ano_sub = ano.add_subparsers(dest="action", required=True)
    ano_score = ano_sub.add_parser("score", help="score a timestamp,value CSV (NAB's format) from its first row")
    ano_score.add_argument("input", help="CSV with a header naming timestamp and value")
    ano_score.add_argument("--output", required=True, help="CSV to write: timestamp,value,anomaly_score")
    ano_score.add_argument("--step", type=float, help="sampling interval in seconds (default: the median interval)")
    ano_score.add_argument("--explain", action="store_true", help="also write surprise, expected, lower, upper")
    ano_score.add_argument("--threshold", type=float, default=0.55, help="count rows scoring at least this (default 0.55; halved repeats stay <= 0.5)")
    ano.set_defaults(func=_cmd_anomalies)

    kaf = sub.add_parser("kafka", help="Kafka topics as a source (docs/kafka.md)")
    kaf_sub = kaf.add_subparsers(dest="action", required=True)
    kaf_consume = kaf_sub.add_parser("consume", help="read the configured topics into the landing zone; SIGTERM "
                                                     "finishes the current file, commits and leaves the group")
    kaf_consume.add_argument("--bootstrap", help="brokers (wins over $METRICS_PIPELINE_KAFKA_BOOTSTRAP and the config)")
    kaf_consume.add_argument("--config", help="configuration file (default $METRICS_PIPELINE_KAFKA_CONFIG or config/kafka.yaml)")
    kaf_consume.add_argument("--until-idle", type=float, metavar="SECONDS",
                             help="drain and exit once no message came for this long with partitions assigned")
    kaf.set_defaults(func=_cmd_kafka)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"metrics-pipeline: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # An unreachable warehouse, a failing migration: the message, not a traceback. psycopg is
        # not imported here, so that `collect` (the host agent) stays small.
        if not any(cls.__module__.startswith("psycopg") for cls in type(exc).__mro__):
            raise
        print(f"metrics-pipeline: database error ({type(exc).__name__}): {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
