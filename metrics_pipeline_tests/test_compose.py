"""docker-compose.yml is consistent with the files it names, .env.example and the Dagster config.

There is no Docker engine in CI, so the topology itself is exercised by dev/test_topology.py; this test
checks what would break `docker compose up` before any container starts: missing files, variables
without a value in .env.example (or dead ones), services that depend on nothing that exists,
ports that disagree between the command, the mapping and workspace.yaml, and the environment
dagster.yaml and the Grafana provisioning read. `docker compose config` runs where installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from metrics_pipeline.lib.warehouse import bi
from metrics_pipeline_tests.support.system_packages import require_system_package

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DAGSTER_SERVICES = ("code-server", "webserver", "daemon")
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


def env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


def env_refs(node) -> set[str]:
    """Names of `env:` sources in a Dagster YAML file (dagster.yaml, workspace.yaml)."""
    if isinstance(node, dict):
        found = {node["env"]} if isinstance(node.get("env"), str) else set()
        return found.union(*(env_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(env_refs(v) for v in node))
    return set()


def test_every_file_the_compose_file_names_exists():
    for name, service in SERVICES.items():
        if "build" in service:
            context = ROOT / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    dockerfile = (ROOT / "docker/Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", dockerfile, flags=re.M):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_every_variable_has_a_value_in_env_example_and_none_is_dead():
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(VARIABLE.findall(text))
    example = env_example()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert used <= set(example), f"not in .env.example: {sorted(used - set(example))}"
    assert set(example) <= used, f".env.example entries nothing reads: {sorted(set(example) - used)}"
    assert all(example[name] for name in required), "every required variable has a placeholder value"


def test_dependencies_exist_and_their_conditions_can_be_met():
    for name, service in SERVICES.items():
        for target, spec in service.get("depends_on", {}).items():
            assert target in SERVICES, f"{name} depends on unknown {target}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{target} has no healthcheck for {name}"
            if spec["condition"] == "service_completed_successfully":
                assert SERVICES[target].get("restart") == "no", f"{target} is one-shot but restarts"


def test_ports_agree_between_commands_mappings_and_workspace():
    published = [p.rsplit(":", 2) for s in SERVICES.values() for p in s.get("ports", [])]
    host_ports = [p[-2] for p in published]
    assert len(host_ports) == len(set(host_ports)), "two services publish the same host port"
    web = SERVICES["webserver"]
    assert web["command"][web["command"].index("-p") + 1] == web["ports"][0].rsplit(":", 1)[1]
    code = SERVICES["code-server"]
    port = code["command"][code["command"].index("-p") + 1]
    assert code["environment"]["DAGSTER_CODE_SERVER_PORT"] == port and code["expose"] == [port]
    assert port in code["healthcheck"]["test"]
    assert code["environment"]["DAGSTER_CODE_SERVER_HOST"] == "code-server"
    assert code["environment"]["METRICS_PIPELINE_ALERTMANAGER_URL"].endswith(":9093")
    assert "alertmanager" in SERVICES


def test_dagster_services_have_what_dagster_yaml_and_workspace_yaml_read():
    needed = env_refs(yaml.safe_load((ROOT / "dagster.yaml").read_text()))
    needed |= env_refs(yaml.safe_load((ROOT / "workspace.yaml").read_text()))
    assert needed == {"DAGSTER_PG_URL", "DAGSTER_CODE_SERVER_HOST", "DAGSTER_CODE_SERVER_PORT"}
    home = re.search(r"DAGSTER_HOME=(\S+)", (ROOT / "docker/Dockerfile").read_text()).group(1)
    for name in DAGSTER_SERVICES:
        service = SERVICES[name]
        assert needed <= set(service["environment"]), name
        assert service["environment"]["DAGSTER_PG_URL"].startswith("postgresql+psycopg2://")
        if "-w" in service["command"]:
            assert service["command"][service["command"].index("-w") + 1] == f"{home}/workspace.yaml"
        assert any(v.endswith(f":{home}/storage") for v in service["volumes"]), f"{name}: shared compute logs"


def test_databases_and_roles_match_the_init_script_and_grafana_provisioning():
    init = (ROOT / "docker/postgres-init.sh").read_text()
    env = SERVICES["code-server"]["environment"]
    for url, database in ((env["METRICS_PIPELINE_DSN"], "metrics"), (env["DAGSTER_PG_URL"], "dagster")):
        user = re.search(r"//(\w+):", url).group(1)
        assert url.endswith(f"@postgres:5432/{database}")
        assert f"CREATE ROLE {user} LOGIN" in init and f"CREATE DATABASE {database} OWNER {user}" in init
    assert "CREATEROLE" in init  # the migrate service creates the BI role as the warehouse owner
    grafana = SERVICES["grafana"]
    for datasource in (ROOT / "grafana/provisioning/datasources").glob("*.yaml"):
        assert set(re.findall(r"\$\{(\w+)\}", datasource.read_text())) <= set(grafana["environment"]), datasource.name
    assert grafana["environment"]["METRICS_PIPELINE_BI_USER"] == bi.DEFAULT_ROLE
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/metrics_pipeline.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert any(v.endswith(f":{path}:ro") for v in grafana["volumes"])


def test_prometheus_scrapes_the_api_with_the_rules_and_grafana_reads_it():
    prometheus = SERVICES["prometheus"]
    flags = dict(arg.split("=", 1) for arg in prometheus["command"])
    config_path = flags["--config.file"]
    mounts = dict(v.split(":")[:2] for v in prometheus["volumes"])
    config = yaml.safe_load((ROOT / next(src for src, dst in mounts.items() if dst == config_path)).read_text())
    for rule_file in config["rule_files"]:  # relative to the configuration file, as Prometheus reads them
        dst = str(Path(config_path).parent / rule_file)
        assert (ROOT / next(src for src, d in mounts.items() if d == dst)).is_file(), rule_file
    api = SERVICES["api"]
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "metrics_pipeline"]
    port = api["command"][api["command"].index("--port") + 1]
    assert job["static_configs"][0]["targets"] == [f"api:{port}"] and job.get("metrics_path", "/metrics") == "/metrics"
    [alertmanagers] = config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"][0]["targets"] == ["alertmanager:9093"]
    datasource = yaml.safe_load((ROOT / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert datasource["datasources"][0]["type"] == "prometheus"
    assert SERVICES["grafana"]["environment"]["METRICS_PIPELINE_PROMETHEUS_URL"] == "http://prometheus:9090"


def _compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_accepts_the_file(tmp_path):
    command = require_system_package(_compose_command(), "docker-compose")
    result = subprocess.run([*command, "--env-file", str(ROOT / ".env.example"), "-f", str(ROOT / "docker-compose.yml"),
                             "config", "--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    (tmp_path / "empty.env").write_text("")
    missing = subprocess.run([*command, "--env-file", str(tmp_path / "empty.env"), "-f", str(ROOT / "docker-compose.yml"),
                              "config", "--quiet"], capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr + missing.stdout


def test_kafka_runs_in_kraft_mode_and_its_consumer_reads_it_into_the_shared_landing_volume():
    kafka, consumer = SERVICES["kafka"], SERVICES["kafka-consumer"]
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller" and "ZOOKEEPER" not in " ".join(env)
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093" and "kafka-data:/var/lib/kafka/data" in kafka["volumes"]
    assert consumer["command"] == ["metrics-pipeline", "kafka", "consume"]
    assert consumer["environment"]["METRICS_PIPELINE_KAFKA_BOOTSTRAP"].endswith("kafka:9092}")
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert consumer["depends_on"]["kafka"]["condition"] == "service_healthy" and "healthcheck" in kafka
    assert "landing:/landing" in consumer["volumes"] and consumer["environment"]["METRICS_PIPELINE_LANDING"] == "/landing"
