"""The deployment files: the Dockerfile, compose and Kubernetes manifests lint clean, name
settings Tollgate reads, and fit together (ports, names, probes, mounts)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from asyncio.subprocess import DEVNULL
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.policy import Policy
from proxy.settings import Settings
from tests.conftest import Proxy, free_port

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BIN = Path(sys.executable).parent
PINNED = re.compile(r"^[\w./-]+:v?\d+\.\d+\.\d+[\w.-]*$")


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, check=False
    )


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object, by kind and name."""
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in documents(path):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings Tollgate would read from this environment."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_yaml_files_lint_clean() -> None:
    """yamllint finds nothing in deploy/ and config/."""
    linted = run(
        BIN / "yamllint", "--strict", "-c", ROOT / ".yamllint.yaml", DEPLOY, ROOT / "config"
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


# ---------------------------------------------------------------- Dockerfile


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), one list per stage."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    found: list[list[str]] = []
    for line in instructions:
        if line.startswith("FROM "):
            found.append([])
        if found:
            found[-1].append(line)
    return found


def test_hadolint_finds_nothing() -> None:
    """hadolint (from the dev extras) passes the Dockerfile with no finding at all."""
    linted = run(BIN / "hadolint", "--failure-threshold", "style", ROOT / "Dockerfile")
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_image_is_built_in_one_stage_and_run_from_a_slim_pinned_one() -> None:
    """Two stages on one exact slim Python release; the last runs as a non-root user."""
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base.group(1))
    build, runtime = stages()
    assert build[0] == "FROM ${PYTHON_IMAGE} AS build"
    assert runtime[0] == "FROM ${PYTHON_IMAGE} AS runtime"
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in ("0", "root")


def test_the_final_image_holds_only_the_installed_package() -> None:
    """The runtime stage copies the built environment and nothing of the source tree; the
    build installs no dev extra and leaves no pip or setuptools behind."""
    build, runtime = stages()
    installs = " ".join(line for line in build if line.startswith("RUN "))
    assert "pip install --no-compile ." in installs
    assert "[dev]" not in installs
    assert "pip uninstall --yes pip setuptools" in installs
    copies = [line for line in runtime if line.startswith(("COPY", "ADD"))]
    assert copies == ["COPY --from=build /opt/tollgate /opt/tollgate"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*") :][:4] == ["*", "!pyproject.toml", "!README.md", "!proxy/"]


def _healthcheck() -> list[str]:
    line = next(line for line in stages()[-1] if line.startswith("HEALTHCHECK "))
    command: list[str] = json.loads(line[line.index(" CMD ") + 5 :])
    return command


async def test_the_healthcheck_asks_healthz_on_the_configured_port(proxy: Proxy) -> None:
    """The image's HEALTHCHECK command succeeds against a live Tollgate, fails on a dead port."""
    command = _healthcheck()
    assert command[0] == "python"
    assert "/healthz" in command[-1]
    for port, expected in ((proxy.server.port, 0), (free_port(), 1)):
        check = await asyncio.create_subprocess_exec(
            sys.executable, *command[1:], env={"TOLLGATE_PORT": str(port)}, stderr=DEVNULL
        )
        assert await check.wait() == expected


# ---------------------------------------------------------------- compose


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment with ${VAR:?...} and ${VAR:-} placeholders filled in."""
    filled = {}
    for name, value in service["environment"].items():
        filled[name] = re.sub(r"\$\{[A-Z_]+:[?-][^}]*\}", "placeholder", str(value))
    return filled


def test_compose_runs_two_replicas_on_shared_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both replicas read the redis store and a metrics port from settings Tollgate knows."""
    services = compose()["services"]
    replicas = [name for name in services if name.startswith("tollgate-")]
    assert replicas == ["tollgate-a", "tollgate-b"]
    for name in replicas:
        service = services[name]
        assert service["build"]["context"] == ".."
        settings = settings_from(_environment(service), monkeypatch)
        assert settings.store == "redis"
        assert settings.redis.url.get_secret_value() == "redis://redis:6379/0"
        assert settings.metrics.port == 9464
        assert settings.upstream.api_key is not None
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["tollgate-a"]["ports"] != services["tollgate-b"]["ports"]


def test_compose_redis_persists() -> None:
    """Redis writes an append-only file to a named volume."""
    redis = compose()["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    volume, mount = redis["volumes"][0].split(":")
    assert mount == "/data"
    assert volume in compose()["volumes"]


def test_compose_prometheus_scrapes_both_replicas() -> None:
    """prometheus.yml is valid (promtool) and targets each replica's metrics port."""
    checked = run("promtool", "check", "config", DEPLOY / "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["tollgate-a:9464", "tollgate-b:9464"]
    mounts = compose()["services"]["prometheus"]["volumes"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_compose_grafana_loads_the_provisioning_and_the_dashboard() -> None:
    """Grafana's mounts put the dashboard where the provisioning provider looks for it."""
    grafana = compose()["services"]["grafana"]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in grafana["volumes"] if ":ro" in volume)
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = documents(DEPLOY / "grafana/provisioning/dashboards/tollgate.yaml")[0]
    assert mounts["./grafana/dashboards"] == providers["providers"][0]["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DEPLOY / "grafana/dashboards" / Path(home).name).is_file()
    datasource = documents(DEPLOY / "grafana/provisioning/datasources/prometheus.yaml")[0]
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_compose_images_are_pinned() -> None:
    """Every image from a registry names an exact version."""
    for name, service in compose()["services"].items():
        if "build" not in service:
            assert PINNED.match(service["image"]), name


# ---------------------------------------------------------------- Kubernetes


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    """kubernetes-validate, strict, against Kubernetes 1.30's schemas shipped offline."""
    checked = run(BIN / "kubernetes-validate", "-k", "1.30.0", "--strict", *K8S.glob("*.yaml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "passed" in checked.stdout


def test_the_validator_refuses_a_misspelled_field(tmp_path: Path) -> None:
    """The schema check above can fail: an unknown field is an error."""
    service = documents(K8S / "service.yaml")[0]
    service["spec"]["portz"] = service["spec"].pop("ports")
    broken = tmp_path / "service.yaml"
    broken.write_text(yaml.safe_dump(service))
    checked = run(BIN / "kubernetes-validate", "-k", "1.30.0", "--strict", broken)
    assert checked.returncode != 0


def _container() -> dict[str, Any]:
    pod = manifests()[("Deployment", "tollgate")]["spec"]["template"]
    container: dict[str, Any] = pod["spec"]["containers"][0]
    return container


def test_the_deployment_probes_readyz_and_healthz() -> None:
    """Readiness asks /readyz, liveness /healthz, both on the named API port."""
    container = _container()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8080, "metrics": 9464}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"]["requests"]["cpu"]  # the autoscaler needs a CPU request


def test_the_deployment_runs_non_root_with_the_config_and_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pod runs as the image's user; its ConfigMap and Secret make valid settings."""
    objects = manifests()
    deployment = objects[("Deployment", "tollgate")]
    pod = deployment["spec"]["template"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    container = _container()
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    sources = [next(iter(source.values()))["name"] for source in container["envFrom"]]
    config, secret = objects[("ConfigMap", sources[0])], objects[("Secret", sources[1])]
    settings = settings_from({**config["data"], **secret["stringData"]}, monkeypatch)
    assert (settings.store, settings.metrics.port) == ("redis", 9464)
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.metrics.port)
    assert all("REPLACE-ME" in value for value in secret["stringData"].values())
    mount = container["volumeMounts"][0]
    assert settings.config_file == Path(mount["mountPath"]) / "tollgate.yaml"
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    policy = objects[("ConfigMap", volume["configMap"]["name"])]["data"]["tollgate.yaml"]
    Policy.model_validate(yaml.safe_load(policy))


def test_the_service_and_autoscaler_point_at_the_deployment() -> None:
    """The Service selects the pods and names their ports; the HPA scales the Deployment."""
    objects = manifests()
    deployment = objects[("Deployment", "tollgate")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = objects[("Service", "tollgate")]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {port["targetPort"] for port in service["spec"]["ports"]} == {"http", "metrics"}
    hpa = objects[("HorizontalPodAutoscaler", "tollgate")]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "tollgate")
    assert hpa["spec"]["minReplicas"] >= 2
