"""The deploy examples and the Dockerfile say what the image check proved.

deploy/check-image.sh builds and runs the image (in .ci/run); these read the files it cannot:
the Compose and Kubernetes examples parse, and the fields a deployment depends on hold.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from gateway import config as config_module
from gateway.contexts import SHUTDOWN_GRACE_S

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# aiohttp's shutdown_timeout in `serve`: open connections get this long after the drain.
CONNECTIONS_S = 2.0


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)s", value)
    assert match, value
    return float(match.group(1))


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ("META_CAPI_TOKEN", "GA4_API_SECRET", "TIKTOK_TOKEN", "PINTEREST_CONVERSION_TOKEN")
    for name in (*names, "GATEWAY_API_KEY"):
        monkeypatch.setenv(name, f"secret-{name.lower()}")
    monkeypatch.setenv("ADMIN_TOKEN", "a-long-enough-admin-token-for-the-check")


def test_dockerfile_base_user_and_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE=python:(\d+\.\d+)-slim$", text, re.M)
    assert base, "ARG BASE=python:X.Y-slim"
    assert re.search(r"^FROM \$\{BASE\}$", text, re.M)
    # The Python the README's figures and mypy's target come from.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert base.group(1) == project["tool"]["mypy"]["python_version"]
    assert re.search(r"^USER 10001(:10001)?$", text, re.M), "numeric USER for runAsNonRoot"
    health = re.search(r"^\s+CMD (\[.*\])$", text, re.M)
    assert health, "an exec-form HEALTHCHECK"
    assert yaml.safe_load(health.group(1)) == ["tag-gateway", "healthcheck"]
    assert re.search(r'^VOLUME \["/data"\]$', text, re.M)


def test_compose_example(secrets: None) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    gateway = compose["services"]["gateway"]
    assert (DEPLOY / gateway["build"]["context"] / gateway["build"]["dockerfile"]).is_file()
    mounts = {target: (source, mode) for source, target, *mode in map(_split, gateway["volumes"])}
    assert mounts["/data"][0] in compose["volumes"]
    env = gateway["environment"]
    source, mode = mounts[env["TAG_GATEWAY_CONFIG"]]
    assert mode == ["ro"]
    # Every secret comes from the environment, never from the file.
    secret_names = set(env) - {"TAG_GATEWAY_CONFIG"}
    for name in secret_names:
        assert env[name] == f"${{{name}:?set {name}}}"
    _assert_config_runs(DEPLOY / source, secret_names)
    assert _seconds(gateway["stop_grace_period"]) >= SHUTDOWN_GRACE_S + CONNECTIONS_S
    shop = compose["services"]["shop"]
    assert shop["depends_on"]["gateway"]["condition"] == "service_healthy"
    assert shop["environment"]["TAG_GATEWAY_URL"] == "http://gateway:8080/v1/events"


def _split(volume: str) -> list[str]:
    return volume.split(":")


def test_kubernetes_example(secrets: None) -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    kinds = {doc["kind"]: doc for doc in docs}
    deployment = kinds["Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == 10001
    gateway = next(c for c in pod["containers"] if c["name"] == "gateway")
    security = gateway["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    port = gateway["ports"][0]
    assert port["containerPort"] == 8080
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert gateway["startupProbe"]["httpGet"]["path"] == "/healthz"

    # The grace period covers the preStop pause and the whole drain.
    sleep = gateway["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    drain = SHUTDOWN_GRACE_S + CONNECTIONS_S
    assert pod["terminationGracePeriodSeconds"] >= float(sleep[1]) + drain

    mounts = {m["mountPath"]: m["name"] for m in gateway["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"]
    assert kinds["PersistentVolumeClaim"]["metadata"]["name"] == claim
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    config_dir = mounts[str(Path(env["TAG_GATEWAY_CONFIG"]).parent)]
    assert "configMap" in volumes[config_dir]
    assert gateway["envFrom"][0]["secretRef"]["name"] == "tag-gateway-secrets"
    # The header's `kubectl create configmap ... --from-file=gateway.yaml=config/example.yaml`.
    header = (DEPLOY / "kubernetes.yaml").read_text()
    made = re.search(r"create configmap (\S+) --from-file=(\S+)=(\S+)", header)
    assert made
    assert made.group(1) == volumes[config_dir]["configMap"]["name"]
    assert made.group(2) == Path(env["TAG_GATEWAY_CONFIG"]).name
    secret_names = set(re.findall(r"--from-literal=(\w+)=", header))
    _assert_config_runs(ROOT / made.group(3), secret_names)
    service = kinds["Service"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


def _assert_config_runs(path: Path, secret_names: set[str]) -> None:
    """The example's config loads with exactly the secrets the example provides."""
    cfg = config_module.load(str(path))
    assert cfg.storage.path.startswith("/data/")
    assert cfg.listen.port == 8080
    used = set(re.findall(r"\$\{(\w+)\}", path.read_text()))
    assert used == secret_names
