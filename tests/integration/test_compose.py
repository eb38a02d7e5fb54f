"""docker-compose.yml, as a real Compose parser reads it.

`docker-compose config` interpolates the file, validates it against the Compose schema and
prints it normalized, without a Docker engine. The checks below then hold the file to the code:
a setting added to a component's settings class but not wired into compose fails here.
"""

import importlib.util
import os
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic_settings import BaseSettings

from gateway.settings import GatewaySettings
from services.auth.settings import AuthSettings
from services.bootstrap import BootstrapSettings
from services.notifications.settings import NotificationsSettings
from services.orders.settings import OrdersSettings
from services.tracking.settings import TrackingSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

# Dummy values for every secret the file requires; recognisable, so the checks below can tell
# that each reached the right place.
SECRETS = {
    "POSTGRES_PASSWORD": "dummy-postgres",
    "RABBITMQ_PASSWORD": "dummy-rabbitmq",
    **{f"{name}_IDENTITY_SECRET": f"dummy-{name.lower()}-identity-secret-of-32-characters"
       for name in ("AUTH", "ORDERS", "TRACKING", "NOTIFICATIONS")},
    **{f"{name}_DB_PASSWORD": f"dummy-{name.lower()}"
       for name in ("AUTH", "ORDERS", "TRACKING", "NOTIFICATIONS")},
    **{f"{name}_BROKER_PASSWORD": f"dummy-{name.lower()}-broker"
       for name in ("AUTH", "ORDERS", "TRACKING", "NOTIFICATIONS", "GATEWAY")},
}

SERVICES: dict[str, type[BaseSettings]] = {
    "auth": AuthSettings,
    "orders": OrdersSettings,
    "tracking": TrackingSettings,
    "notifications": NotificationsSettings,
}
COMPONENTS: dict[str, type[BaseSettings]] = {"gateway": GatewaySettings, **SERVICES}
SETTINGS: dict[str, type[BaseSettings]] = {**COMPONENTS, "bootstrap": BootstrapSettings}
INFRASTRUCTURE = ("postgres", "rabbitmq")
# `docker compose --profile observability`: started only when asked for.
PROFILE = "observability"
OBSERVABILITY = ("prometheus", "grafana", "jaeger")
OBSERVABILITY_FILES = ROOT / "deploy" / "observability"

Service = dict[str, Any]


def compose_executable() -> str:
    executable = shutil.which("docker-compose")
    if executable is None:
        pytest.fail("docker-compose is not on PATH: run scripts/ensure-compose-parser")
    return executable


def run_config(env_file: Path, secrets: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` with only PATH and the given secrets in its environment.

    The empty --env-file keeps a developer's .env (written by `make run`) from filling in
    variables the test means to leave unset.
    """
    command = [compose_executable(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"]
    env = {"PATH": os.environ.get("PATH", ""), **secrets}
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def services(env_file: Path) -> dict[str, Service]:
    result = run_config(env_file, SECRETS)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)["services"]


def environment(service: Service) -> dict[str, str]:
    """A service's environment as a mapping, whichever of the two spellings the parser prints."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def conditions(service: Service) -> dict[str, str]:
    depends_on = service.get("depends_on") or {}
    if isinstance(depends_on, list):  # the short form means "started"
        return dict.fromkeys(depends_on, "service_started")
    return {name: spec["condition"] for name, spec in depends_on.items()}


def published_targets(service: Service) -> list[int]:
    """Container ports a service publishes, from the short ("8080:8080") or the long form."""
    return [target for _, target in published(service)]


def published(service: Service) -> list[tuple[str, int]]:
    """(host address, container port) of each port a service publishes; the address is ""
    when the port is published on every interface."""
    ports = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            host_ip, target = port.get("host_ip", ""), port["target"]
        else:
            parts = str(port).split(":")
            host_ip, target = (parts[0] if len(parts) == 3 else ""), parts[-1]
        ports.append((host_ip, int(str(target).split("/")[0])))
    return ports


def bind_mounts(service: Service) -> dict[str, Path]:
    """Container path -> file or directory of this machine, for each bind mount, from the
    short ("./a:/b:ro") or the long form."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts[volume["target"]] = Path(volume["source"])
        elif volume.startswith(("/", ".")):
            source, target = volume.split(":")[:2]
            mounts[target] = Path(source)
    return {target: (ROOT / source).resolve() for target, source in mounts.items()}


def command_module(service: Service) -> str:
    command = service["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]
    assert argv[:2] == ["python", "-m"], f"expected `python -m MODULE`, got {argv}"
    return argv[2]


def test_config_parses_with_the_required_secrets(env_file: Path) -> None:
    result = run_config(env_file, SECRETS)
    assert result.returncode == 0, result.stderr
    assert "services:" in result.stdout


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_every_secret_is_required(env_file: Path, missing: str) -> None:
    secrets = {name: value for name, value in SECRETS.items() if name != missing}
    result = run_config(env_file, secrets)
    assert result.returncode != 0, f"compose accepted a missing {missing}"
    assert missing in result.stderr


def test_every_part_is_there(services: dict[str, Service]) -> None:
    assert set(services) == {*SETTINGS, *INFRASTRUCTURE, *OBSERVABILITY}


def test_the_observability_tools_run_only_with_their_profile(
    services: dict[str, Service],
) -> None:
    for name, service in services.items():
        expected = [PROFILE] if name in OBSERVABILITY else []
        assert (service.get("profiles") or []) == expected, name


@pytest.mark.parametrize("name", [*COMPONENTS, *INFRASTRUCTURE])
def test_healthchecks(services: dict[str, Service], name: str) -> None:
    healthcheck = services[name].get("healthcheck") or {}
    assert healthcheck.get("test"), f"{name} has no healthcheck"
    assert not healthcheck.get("disable", False)
    if name in COMPONENTS:
        assert "/health/" in " ".join(healthcheck["test"])


def test_bootstrap_runs_once_after_postgres_and_rabbitmq(services: dict[str, Service]) -> None:
    assert "healthcheck" not in services["bootstrap"]
    assert conditions(services["bootstrap"]) == {
        "postgres": "service_healthy",
        "rabbitmq": "service_healthy",
    }


@pytest.mark.parametrize("name", SERVICES)
def test_services_wait_for_infrastructure_and_bootstrap(
    services: dict[str, Service], name: str
) -> None:
    assert conditions(services[name]) == {
        "postgres": "service_healthy",
        "rabbitmq": "service_healthy",
        "bootstrap": "service_completed_successfully",
    }


def test_gateway_waits_for_healthy_services(services: dict[str, Service]) -> None:
    assert conditions(services["gateway"]) == dict.fromkeys(SERVICES, "service_healthy")


@pytest.mark.parametrize("name", SETTINGS)
def test_every_setting_is_wired(services: dict[str, Service], name: str) -> None:
    env = environment(services[name])
    settings_class = SETTINGS[name]
    missing = sorted(
        field.upper() for field in settings_class.model_fields if field.upper() not in env
    )
    assert not missing, f"{name}'s environment lacks {missing}"
    # The values must also be ones the component accepts, read as it reads them.
    with mock.patch.dict(os.environ, env, clear=True):
        settings_class()


@pytest.mark.parametrize("name", COMPONENTS)
def test_components_listen_on_every_interface(services: dict[str, Service], name: str) -> None:
    assert environment(services[name])["HOST"] == "0.0.0.0"


@pytest.mark.parametrize("name", SETTINGS)
def test_commands_name_runnable_modules(services: dict[str, Service], name: str) -> None:
    module = command_module(services[name])
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"no module {module}"
    if spec.submodule_search_locations is not None:  # `python -m PACKAGE` runs its __main__
        assert importlib.util.find_spec(f"{module}.__main__") is not None


@pytest.mark.parametrize("name", SERVICES)
def test_gateway_upstreams_point_at_the_services(services: dict[str, Service], name: str) -> None:
    url = urlsplit(environment(services["gateway"])[f"{name.upper()}_URL"])
    assert url.hostname == name
    assert url.port == int(environment(services[name])["PORT"])


def test_only_the_gateway_publishes_a_port(services: dict[str, Service]) -> None:
    """Of the shop itself: the observability tools publish theirs to this machine alone."""
    gateway_port = int(environment(services["gateway"])["PORT"])
    assert published_targets(services["gateway"]) == [gateway_port]
    publishing = [name for name in services
                  if name not in ("gateway", *OBSERVABILITY) and services[name].get("ports")]
    assert not publishing
    for name in OBSERVABILITY:
        assert {host for host, _ in published(services[name])} == {"127.0.0.1"}, name


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_shares_a_key_of_its_own_with_the_gateway(
    services: dict[str, Service], name: str
) -> None:
    secret = environment(services[name])["IDENTITY_SECRET"]
    assert secret == environment(services["gateway"])[f"{name.upper()}_IDENTITY_SECRET"]
    assert secret == SECRETS[f"{name.upper()}_IDENTITY_SECRET"]
    others = [environment(services[other])["IDENTITY_SECRET"] for other in SERVICES
              if other != name]
    assert secret not in others


@pytest.mark.parametrize("name", SERVICES)
def test_service_database_matches_bootstrap(services: dict[str, Service], name: str) -> None:
    # Bootstrap sets each role's password from its URL; the service must sign in with the same.
    dsn = environment(services[name])["DATABASE_URL"]
    assert dsn == environment(services["bootstrap"])[f"{name.upper()}_DATABASE_URL"]
    url = urlsplit(dsn)
    assert (url.hostname, url.path, url.username) == ("postgres", "/shop", f"shop_{name}")
    assert url.password == SECRETS[f"{name.upper()}_DB_PASSWORD"]


def test_bootstrap_signs_in_as_the_postgres_admin(services: dict[str, Service]) -> None:
    url = urlsplit(environment(services["bootstrap"])["ADMIN_DATABASE_URL"])
    assert url.hostname == "postgres"
    assert url.password == environment(services["postgres"])["POSTGRES_PASSWORD"]


@pytest.mark.parametrize("name", COMPONENTS)
def test_each_component_signs_in_to_rabbitmq_as_its_own_user(
    services: dict[str, Service], name: str
) -> None:
    """Bootstrap makes each component's user from the URL it is given: the component signs in
    with that same URL, as a user of its own, never as the administrator."""
    own = environment(services[name])["RABBITMQ_URL"]
    assert own == environment(services["bootstrap"])[f"{name.upper()}_RABBITMQ_URL"]
    url = urlsplit(own)
    assert (url.hostname, url.username) == ("rabbitmq", f"shop_{name}")
    assert url.password == SECRETS[f"{name.upper()}_BROKER_PASSWORD"]


def test_bootstrap_signs_in_to_rabbitmq_as_its_administrator(
    services: dict[str, Service],
) -> None:
    broker = environment(services["rabbitmq"])
    for name in ("RABBITMQ_URL", "RABBITMQ_MANAGEMENT_URL"):
        url = urlsplit(environment(services["bootstrap"])[name])
        assert url.hostname == "rabbitmq"
        assert url.username == broker["RABBITMQ_DEFAULT_USER"]
        assert url.password == broker["RABBITMQ_DEFAULT_PASS"] == SECRETS["RABBITMQ_PASSWORD"]


# The observability profile -----------------------------------------------------------------


@pytest.mark.parametrize("name", OBSERVABILITY)
def test_observability_images_are_pinned(services: dict[str, Service], name: str) -> None:
    """A version, not a moving tag: the dashboard and the provisioning are written for it."""
    image = services[name]["image"]
    repository, _, tag = image.rpartition(":")
    assert "@sha256:" in image or (repository and tag.lstrip("v")[:1].isdigit()), image
    assert tag.count(".") >= 2 or "@sha256:" in image, f"{image}: name the patch version"


@pytest.mark.parametrize("name", OBSERVABILITY)
def test_observability_mounts_exist(services: dict[str, Service], name: str) -> None:
    for target, source in bind_mounts(services[name]).items():
        assert source.is_relative_to(OBSERVABILITY_FILES), (name, target, source)
        assert source.exists(), (name, target, source)


def test_prometheus_reads_its_config_and_rules_from_the_repository(
    services: dict[str, Service],
) -> None:
    mounts = bind_mounts(services["prometheus"])
    config_path = "/etc/prometheus/prometheus.yml"  # what the image's own command reads
    assert mounts[config_path] == OBSERVABILITY_FILES / "prometheus.yml"
    config = yaml.safe_load(mounts[config_path].read_text())
    assert config["rule_files"], "the alerting rules are evaluated"
    for rules in config["rule_files"]:  # relative to the config file, in the container
        assert mounts[str(PurePosixPath(config_path).parent / rules)] == (
            OBSERVABILITY_FILES / rules
        )


def test_prometheus_scrapes_every_components_metrics_port(services: dict[str, Service]) -> None:
    config = yaml.safe_load((OBSERVABILITY_FILES / "prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "shop"]
    targets = {target for static in job["static_configs"] for target in static["targets"]}
    assert targets == {
        f"{name}:{environment(services[name])['METRICS_PORT']}" for name in COMPONENTS
    }
    for name in COMPONENTS:
        assert environment(services[name])["METRICS_HOST"] == "0.0.0.0", name


def test_grafana_is_provisioned_with_the_data_sources_and_the_dashboard(
    services: dict[str, Service],
) -> None:
    grafana = services["grafana"]
    mounts = bind_mounts(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == OBSERVABILITY_FILES / "grafana" / "provisioning"
    sources = [source for path in (provisioning / "datasources").glob("*.yml")
               for source in yaml.safe_load(path.read_text())["datasources"]]
    hosts = {source["type"]: urlsplit(source["url"]) for source in sources}
    # Each data source is the profile's own service, on the port it listens on.
    assert (hosts["prometheus"].hostname, hosts["prometheus"].port) == ("prometheus", 9090)
    assert (hosts["jaeger"].hostname, hosts["jaeger"].port) == ("jaeger", 16686)
    assert conditions(grafana).keys() == {"prometheus", "jaeger"}
    providers = [provider for path in (provisioning / "dashboards").glob("*.yml")
                 for provider in yaml.safe_load(path.read_text())["providers"]]
    (provider,) = providers
    dashboards = mounts[provider["options"]["path"]]
    assert sorted(p.name for p in dashboards.glob("*.json")) == ["shop.json"]
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards / PurePosixPath(home).relative_to(provider["options"]["path"])).exists()


def test_tracing_is_off_unless_an_otlp_endpoint_is_given(
    services: dict[str, Service], env_file: Path
) -> None:
    for name in COMPONENTS:
        assert environment(services[name])["OTEL_EXPORTER_OTLP_ENDPOINT"] == "", name
    endpoint = "http://jaeger:4318"
    result = run_config(env_file, {**SECRETS, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    assert result.returncode == 0, result.stderr
    traced = yaml.safe_load(result.stdout)["services"]
    for name in COMPONENTS:
        assert environment(traced[name])["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint, name
    # Jaeger takes OTLP over gRPC and HTTP, and shows the traces on 16686.
    assert {4317, 4318, 16686} <= set(published_targets(services["jaeger"]))
