"""`metrics-pipeline`: the command line for operators (plain argparse, no Dagster import at start-up).

    metrics-pipeline db start|stop|status|dsn   the embedded PostgreSQL
    metrics-pipeline migrate [--target N]       apply pending warehouse migrations
    metrics-pipeline dev                        PostgreSQL + migrations + dagster dev (make dev)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from metrics_pipeline.lib import embedded_pg, migrate, settings


def _cmd_db(args: argparse.Namespace) -> int:
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
    dsn = embedded_pg.resolve_dsn()
    schema = settings.schema_name()
    applied = migrate.migrate(dsn, schema, target=args.target)
    if applied:
        print(f"applied migration(s) {', '.join(map(str, applied))} to schema {schema}")
    else:
        print(f"schema {schema} is up to date")
    return 0


def _cmd_dev(args: argparse.Namespace) -> int:
    from metrics_pipeline.lib.devserver import run_dev

    return run_dev(host=args.host, port=args.port)


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

    dev = sub.add_parser("dev", help="run PostgreSQL, migrations and dagster dev; Ctrl-C stops all")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=int(os.environ.get("METRICS_PIPELINE_DEV_PORT", "3000")))
    dev.set_defaults(func=_cmd_dev)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (embedded_pg.PostgresUnavailable, ValueError) as exc:
        print(f"metrics-pipeline: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
