"""The production topology on one machine, without Docker: a gRPC code server, `dagster-webserver` and
`dagster-daemon` as three processes sharing PostgreSQL instance storage (SPEC §7).

It uses the repository's own `dagster.yaml` and `workspace.yaml`, exactly as docker-compose does, so
the end-to-end test and the backfill benchmark exercise the files users deploy. Every process runs in
its own session with default signal handling (a process started in the background ignores SIGINT
otherwise) and is stopped, with its children, by `stop()` or by leaving the `with` block.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests

from metrics_pipeline.dev.devserver import default_signals, stop_process_group
from metrics_pipeline.lib import settings

LOCATION = "metrics_pipeline"

_BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

_LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on PartitionSetNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""

_BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      runs(limit: 10000) { runId status startTime endTime }
      error { message }
    }
    ... on PythonError { message }
  }
}
"""

_LOCATION_STATUS = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""


_RUN_ERRORS = """
query($id: ID!) {
  runOrError(runId: $id) {
    ... on Run {
      eventConnection(afterCursor: null) {
        events {
          __typename
          ... on ExecutionStepFailureEvent { stepKey error { message } }
          ... on RunFailureEvent { message }
        }
      }
    }
  }
}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_START_SENSOR = """
mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) { __typename ... on PythonError { message } }
}
"""


class TopologyError(RuntimeError):
    pass


class Topology:
    """Code server + webserver + daemon on `dagster_pg_url`; `env` is what the user code needs
    (warehouse DSN, landing zone, source configuration). Use as a context manager."""

    def __init__(self, home: Path, env: Mapping[str, str], dagster_pg_url: str):
        self.home = Path(home)
        self.logs = self.home / "process-logs"  # not logs/: Dagster telemetry owns that folder
        self.code_port = free_port()
        self.web_port = free_port()
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.env = {
            **os.environ,
            **env,
            "DAGSTER_HOME": str(self.home),
            "DAGSTER_PG_URL": dagster_pg_url,
            "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
            "DAGSTER_CODE_SERVER_PORT": str(self.code_port),
        }
        self.procs: dict[str, subprocess.Popen] = {}

    # -- processes -----------------------------------------------------------------------------
    def _bin(self, name: str) -> str:
        return str(Path(sys.executable).with_name(name))

    def _spawn(self, name: str, args: Sequence[str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            list(args), env=self.env, cwd=settings.project_root(), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=default_signals,
        )
        out.close()

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def _alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise TopologyError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def start(self, timeout: float = 180.0) -> Topology:
        self.home.mkdir(parents=True, exist_ok=True)
        for name in ("dagster.yaml", "workspace.yaml"):
            shutil.copyfile(settings.project_root() / name, self.home / name)
        workspace = str(self.home / "workspace.yaml")
        deadline = time.monotonic() + timeout
        self._spawn("code-server", [
            self._bin("dagster"), "code-server", "start", "-m", "metrics_pipeline.definitions",
            "-h", "127.0.0.1", "-p", str(self.code_port), "--location-name", LOCATION,
        ])
        while subprocess.run(
            [self._bin("dagster"), "api", "grpc-health-check", "-p", str(self.code_port), "-h", "127.0.0.1"],
            env=self.env, capture_output=True,
        ).returncode != 0:
            self._alive("code-server")
            if time.monotonic() > deadline:
                raise TopologyError(f"code server not serving within {timeout:.0f} s:\n{self.log_tail('code-server')}")
            time.sleep(0.5)
        self._spawn("webserver", [
            self._bin("dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.web_port), "-w", workspace,
        ])
        self._spawn("daemon", [self._bin("dagster-daemon"), "run", "-w", workspace])
        while True:
            self._alive("webserver")
            self._alive("daemon")
            try:
                entries = self.graphql(_LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
                states = {e["name"]: e["locationOrLoadError"] for e in entries}
                state = states.get(LOCATION) or {}
                if state.get("__typename") == "RepositoryLocation":
                    return self
                if state.get("__typename") == "PythonError":
                    raise TopologyError(f"code location failed to load: {state['message']}")
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TopologyError(f"webserver not ready within {timeout:.0f} s:\n{self.log_tail('webserver')}")
            time.sleep(0.5)

    def stop(self) -> None:
        for name in ("daemon", "webserver", "code-server"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                stop_process_group(proc, timeout=20)

    def __enter__(self) -> Topology:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- GraphQL -------------------------------------------------------------------------------
    def graphql(self, query: str, variables: Mapping | None = None) -> dict:
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise TopologyError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def sensor_selector(self, name: str) -> dict:
        return {"repositoryLocationName": "metrics_pipeline", "repositoryName": "__repository__", "sensorName": name}

    def start_sensor(self, name: str) -> None:
        """Turn sensor `name` on (sensors ship off: a deployment turns on the ones it runs)."""
        result = self.graphql(_START_SENSOR, {"selector": self.sensor_selector(name)})["startSensor"]
        if result["__typename"] == "PythonError":
            raise TopologyError(f"cannot start {name}: {result['message']}")

    def launch_backfill(self, ranges: Mapping[str, tuple[str, str]], title: str = "") -> str:
        """Backfill each asset over its (first, last) partition key range; returns the backfill id."""
        params = {
            "partitionsByAssets": [
                {"assetKey": {"path": key.split("/")}, "partitions": {"range": {"start": first, "end": last}}}
                for key, (first, last) in ranges.items()
            ],
            "title": title or None,
        }
        result = self.graphql(_LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise TopologyError(f"backfill not launched: {result}")
        return result["backfillId"]

    def run_errors(self, run_id: str) -> list[str]:
        """The step and run failure messages of a run, for assertion messages."""
        run = self.graphql(_RUN_ERRORS, {"id": run_id})["runOrError"]
        events = (run.get("eventConnection") or {}).get("events", [])
        return [
            f"{e.get('stepKey') or 'run'}: {(e.get('error') or {}).get('message') or e.get('message')}"
            for e in events if e["__typename"] in {"ExecutionStepFailureEvent", "RunFailureEvent"}
        ]

    def wait_backfill(self, backfill_id: str, timeout: float = 600.0, poll: float = 1.0) -> dict:
        """Poll until the backfill is done; returns {status, runs, error}. Raises on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for name in self.procs:
                self._alive(name)
            state = self.graphql(_BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
            if state["__typename"] != "PartitionBackfill":
                raise TopologyError(f"backfill {backfill_id}: {state}")
            runs_done = all(run["status"] in {"SUCCESS", "FAILURE", "CANCELED"} for run in state["runs"])
            if state["status"] in _BACKFILL_DONE and runs_done:
                return state
            if time.monotonic() > deadline:
                raise TopologyError(
                    f"backfill {backfill_id} still {state['status']} after {timeout:.0f} s:\n{self.log_tail('daemon')}"
                )
            time.sleep(poll)
