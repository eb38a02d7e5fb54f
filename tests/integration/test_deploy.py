"""deploy/ as a cluster would take it: rendered by kubectl's kustomize, every object checked
against the schemas of the versions named (Kubernetes 1.31, from kubernetes-validate; the
operators' kinds against tests/crd_schemas), the shape every component must have, network
policies that let only the gateway take outside traffic, and a policy scanner's verdict."""

import json
import os
import re
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gateway.settings import GatewaySettings
from services.auth.settings import AuthSettings
from services.backup import parser as backup_parser
from services.bootstrap import BootstrapSettings
from services.notifications.settings import NotificationsSettings
from services.orders.settings import OrdersSettings
from services.tracking.settings import TrackingSettings

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "deploy" / "overlays" / "production"
KUBERNETES = "1.31"
CRD_SCHEMAS = ROOT / "tests" / "crd_schemas"
KUBECTL = Path(sys.executable).with_name("kubectl")
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
SETTINGS = {"gateway": GatewaySettings, "auth": AuthSettings, "orders": OrdersSettings,
            "tracking": TrackingSettings, "notifications": NotificationsSettings}
SERVICES = ("auth", "orders", "tracking", "notifications")
SECRETS_DIR = "/run/secrets/shop"
# Findings of the policy scanner accepted, each with why.
WAIVED = {
    "CKV_K8S_43": "Image should use digest: the overlay names the released tag; the release "
                  "pipeline pins the digest it built (`kustomize edit set image "
                  "shop-backend=...@sha256:...`), which a file in the repository cannot know.",
}


@cache
def rendered() -> tuple[dict[str, Any], ...]:
    output = subprocess.run(
        [str(KUBECTL), "kustomize", str(OVERLAY)], capture_output=True, text=True, check=True
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(output) if doc)


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in rendered() if doc["kind"] == kind}


def component_of(name: str) -> str:
    return name.removeprefix("shop-")


def test_every_builtin_object_is_valid_for_the_kubernetes_version() -> None:
    builtin = [doc for doc in rendered() if "." not in doc["apiVersion"].split("/")[0]
               or doc["apiVersion"].split("/")[0].endswith(".k8s.io")]
    assert len(builtin) > 30
    for doc in builtin:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


OPERATOR_KINDS = ("Cluster", "Pooler", "ScheduledBackup", "RabbitmqCluster")


def validate_operator_object(doc: dict[str, Any]) -> None:
    group = doc["apiVersion"].replace("/", "_")
    schema = json.loads((CRD_SCHEMAS / f"{group}_{doc['kind']}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)


def test_the_operators_objects_are_valid_for_their_versions() -> None:
    custom = [doc for doc in rendered() if doc["kind"] in OPERATOR_KINDS]
    assert {doc["kind"] for doc in custom} == set(OPERATOR_KINDS)
    for doc in custom:
        validate_operator_object(doc)


def test_a_misspelled_field_of_an_operators_object_is_refused() -> None:
    """The operators' schemas are strict where the manifests write: a typo fails the test."""
    cluster = json.loads(json.dumps(of_kind("Cluster")["shop-db"]))
    cluster["spec"]["instancess"] = 3
    schema = json.loads((CRD_SCHEMAS / "postgresql.cnpg.io_v1_Cluster.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(cluster)


@pytest.mark.parametrize("component", SETTINGS)
def test_every_component_is_replicated_spread_probed_bounded_and_unprivileged(
    component: str,
) -> None:
    deployment = of_kind("Deployment")[f"shop-{component}"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] >= 2
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} >= {
        "kubernetes.io/hostname", "topology.kubernetes.io/zone"
    }
    for c in pod["topologySpreadConstraints"]:
        assert c["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert set(container["resources"]) == {"requests", "limits"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("component", SETTINGS)
def test_every_component_has_a_disruption_budget_and_an_autoscaler(component: str) -> None:
    deployment = of_kind("Deployment")[f"shop-{component}"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    budget = of_kind("PodDisruptionBudget")[f"shop-{component}"]
    assert budget["spec"]["minAvailable"] >= 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    autoscaler = of_kind("HorizontalPodAutoscaler")[f"shop-{component}"]
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": f"shop-{component}"
    }
    assert autoscaler["spec"]["minReplicas"] >= 2


def _secret_files(pod: dict[str, Any]) -> set[str]:
    volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
    return {item["path"] for source in volume["projected"]["sources"]
            for item in source["secret"]["items"]}


def _given(pod: dict[str, Any]) -> set[str]:
    """The settings a pod is given: variables, the shared ConfigMap, files of secrets."""
    (container,) = pod["containers"]
    config = of_kind("ConfigMap")["shop-settings"]["data"]
    variables = {v["name"].lower() for v in container.get("env", [])}
    return variables | {key.lower() for key in config} | _secret_files(pod)


@pytest.mark.parametrize("component", SETTINGS)
def test_every_setting_a_component_needs_is_given_and_no_secret_is_a_variable(
    component: str,
) -> None:
    pod = of_kind("Deployment")[f"shop-{component}"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    required = {name for name, field in SETTINGS[component].model_fields.items()
                if field.is_required()}
    assert required <= _given(pod), required - _given(pod)
    assert {"name": "SECRETS_DIR", "value": SECRETS_DIR} in container["env"]
    assert all("valueFrom" not in v for v in container["env"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "secrets")
    assert mount["mountPath"] == SECRETS_DIR and mount["readOnly"] is True


def test_the_bootstrap_job_is_given_every_setting_it_needs() -> None:
    pod = of_kind("Job")["shop-bootstrap"]["spec"]["template"]["spec"]
    required = {name for name, field in BootstrapSettings.model_fields.items()
                if field.is_required()}
    assert required <= _given(pod), required - _given(pod)
    assert pod["containers"][0]["command"] == ["python", "-m", "services.bootstrap"]


def test_no_secret_is_written_into_the_manifests() -> None:
    """Secrets are referenced by name, never carried: no Secret, and no value anywhere that
    holds a credential (a URL with a password in it)."""
    assert not of_kind("Secret")
    for doc in rendered():
        text = yaml.safe_dump(doc).replace("http" + "://shop-", "").replace("s3" + "://", "")
        assert ":" + "//" not in text, doc["kind"]


def test_postgres_has_a_synchronous_standby_and_a_transaction_pooler() -> None:
    cluster = of_kind("Cluster")["shop-db"]["spec"]
    assert cluster["instances"] >= 3
    assert cluster["postgresql"]["synchronous"]["number"] >= 1
    pooler = of_kind("Pooler")["shop-db-pooler"]["spec"]
    assert pooler["cluster"]["name"] == "shop-db" and pooler["type"] == "rw"
    assert pooler["pgbouncer"]["poolMode"] == "transaction"
    assert pooler["instances"] >= 2
    assert of_kind("RabbitmqCluster")["shop-mq"]["spec"]["replicas"] == 3


def test_postgres_archives_its_wal_and_takes_a_base_backup_every_night() -> None:
    """Point-in-time recovery: WAL archived to object storage as it is written, and base
    backups there on a schedule, with keys from a Secret, never in the manifests."""
    backup = of_kind("Cluster")["shop-db"]["spec"]["backup"]
    store = backup["barmanObjectStore"]
    assert store["destinationPath"].startswith("s3" + "://")
    assert store["wal"]["compression"] and store["wal"]["encryption"]
    for key in ("accessKeyId", "secretAccessKey"):
        assert set(store["s3Credentials"][key]) == {"name", "key"}
    assert backup["retentionPolicy"] == "30d"
    (scheduled,) = of_kind("ScheduledBackup").values()
    assert scheduled["spec"]["cluster"]["name"] == "shop-db"
    assert scheduled["spec"]["method"] == "barmanObjectStore"
    assert len(scheduled["spec"]["schedule"].split()) == 6  # seconds first
    # The instances reach the object store: no policy holds their egress.
    assert _allowed("Egress", POSTGRES[1], OUTSIDE, 443)


def test_a_misspelled_backup_field_is_refused() -> None:
    cluster = json.loads(json.dumps(of_kind("Cluster")["shop-db"]))
    cluster["spec"]["backup"]["barmanObjectStore"]["destinationPth"] = "s3" + "://x"
    with pytest.raises(jsonschema.ValidationError):
        validate_operator_object(cluster)
    scheduled = json.loads(json.dumps(next(iter(of_kind("ScheduledBackup").values()))))
    scheduled["spec"]["schedule"] = "0 2 * * *"  # five fields: the hour would be a minute
    with pytest.raises(jsonschema.ValidationError):
        validate_operator_object(scheduled)


# The restore procedure of docs/operations.md, as an operator would write it down -----------

RESTORE_GUIDE = ROOT / "docs" / "operations.md"


def restore_files() -> dict[str, str]:
    """The files of the guide's `restore/` directory: its YAML blocks naming one."""
    blocks = re.findall(r"```yaml\n(.*?)```", RESTORE_GUIDE.read_text(), re.DOTALL)
    files = {}
    for block in blocks:
        text = textwrap.dedent(block)
        first = text.splitlines()[0]
        if first.startswith("# restore/"):
            files[first.removeprefix("# restore/").strip()] = text
    return files


def rendered_restore(directory: Path) -> tuple[dict[str, Any], ...]:
    for name, text in restore_files().items():
        (directory / name).write_text(text)
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    # Written for restore/ in the checkout; here the same overlay, where it is.
    assert kustomization["resources"] == ["../deploy/overlays/production"]
    kustomization["resources"] = [os.path.relpath(OVERLAY, directory)]  # kustomize: no absolute
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    output = subprocess.run([str(KUBECTL), "kustomize", str(directory)], capture_output=True,
                            text=True, check=True).stdout
    return tuple(doc for doc in yaml.safe_load_all(output) if doc)


def test_the_guide_s_restore_recovers_shop_db_from_the_archive_it_writes(
    tmp_path: Path,
) -> None:
    restored = {(d["kind"], d["metadata"]["name"]): d for d in rendered_restore(tmp_path)}
    cluster = restored[("Cluster", "shop-db")]
    validate_operator_object(cluster)
    spec, running = cluster["spec"], of_kind("Cluster")["shop-db"]["spec"]
    assert set(spec["bootstrap"]) == {"recovery"}
    recovery = spec["bootstrap"]["recovery"]
    assert recovery["recoveryTarget"]["targetTime"]
    initdb = running["bootstrap"]["initdb"]
    assert (recovery["database"], recovery["owner"], recovery["secret"]) == (
        initdb["database"], initdb["owner"], initdb["secret"])
    (source,) = [c for c in spec["externalClusters"] if c["name"] == recovery["source"]]
    written = running["backup"]["barmanObjectStore"]
    read = source["barmanObjectStore"]
    # It reads the archive the running cluster writes, and writes an archive of its own.
    assert (read["destinationPath"], read["serverName"], read["s3Credentials"]) == (
        written["destinationPath"], written.get("serverName", "shop-db"),
        written["s3Credentials"])
    assert spec["backup"]["barmanObjectStore"]["serverName"] != read["serverName"]
    # Everything else as the production overlay has it.
    assert {k: v for k, v in spec.items() if k not in ("bootstrap", "externalClusters",
                                                       "backup")} == {
        k: v for k, v in running.items() if k not in ("bootstrap", "backup")}


def test_the_guide_s_restore_keeps_the_components_stopped_and_runs_after_recovery(
    tmp_path: Path,
) -> None:
    restored = rendered_restore(tmp_path)
    for doc in restored:
        if doc["kind"] == "Deployment":
            assert doc["spec"]["replicas"] == 0, doc["metadata"]["name"]
    (job,) = [d for d in restored if d["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["python", "-m", "services.backup"]
    # A command the module takes, with the bootstrap's settings (the Job's secrets).
    assert backup_parser().parse_args(container["command"][3:]).command == "after-recovery"
    # Otherwise the bootstrap Job: the same image, secrets and limits.
    bootstrap_job = of_kind("Job")["shop-bootstrap"]["spec"]["template"]["spec"]
    assert {**job["spec"]["template"]["spec"], "containers": None} == {
        **bootstrap_job, "containers": None}
    assert {**container, "command": None} == {**bootstrap_job["containers"][0], "command": None}
    untouched = {(d["kind"], d["metadata"]["name"]) for d in restored} - {
        ("Cluster", "shop-db"), ("Job", "shop-bootstrap")}
    by_id = {(d["kind"], d["metadata"]["name"]): d for d in restored}
    production = {(d["kind"], d["metadata"]["name"]): d for d in rendered()}
    assert set(by_id) == set(production)
    for key in untouched:
        if key[0] != "Deployment":
            assert by_id[key] == production[key], key


@pytest.mark.parametrize("component", SETTINGS)
def test_metrics_are_scraped_from_the_metrics_listener(component: str) -> None:
    template = of_kind("Deployment")[f"shop-{component}"]["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    (container,) = template["spec"]["containers"]
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == env["METRICS_PORT"]
    assert env["METRICS_HOST"] == "0.0.0.0"


# Network policies, read as the cluster reads them -----------------------------------------


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        if expression["operator"] == "In" and value not in expression["values"]:
            return False
        if expression["operator"] == "NotIn" and value in expression["values"]:
            return False
        if expression["operator"] == "Exists" and value is None:
            return False
    return True


Peer = tuple[str, dict[str, str]]  # (namespace, pod labels); namespace "" for outside


def _peer_allowed(rule_peers: list[dict[str, Any]] | None, peer: Peer) -> bool:
    if rule_peers is None:  # no `from`/`to`: any peer, outside the cluster included
        return True
    namespace, labels = peer
    for allowed in rule_peers:
        if "namespaceSelector" in allowed:
            names = {"kubernetes.io/metadata.name": namespace} if namespace else {}
            if not namespace or not _matches(allowed["namespaceSelector"], names):
                continue
            if "podSelector" in allowed and not _matches(allowed["podSelector"], labels):
                continue
            return True
        if "podSelector" in allowed and namespace == "shop" and _matches(
            allowed["podSelector"], labels
        ):
            return True
    return False


def _ports_allow(rule: dict[str, Any], port: int) -> bool:
    return "ports" not in rule or any(p.get("port") == port for p in rule["ports"])


def _allowed(direction: str, pod: dict[str, str], peer: Peer, port: int) -> bool:
    """Whether the namespace's policies let `peer` reach `pod` on `port` (direction
    "Ingress"), or `pod` reach `peer` (direction "Egress")."""
    selecting = [p["spec"] for p in of_kind("NetworkPolicy").values()
                 if _matches(p["spec"]["podSelector"], pod)
                 and direction in p["spec"]["policyTypes"]]
    if not selecting:
        return True  # no policy isolates the pod in this direction
    key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    return any(
        _peer_allowed(rule.get(peers), peer) and _ports_allow(rule, port)
        for policy in selecting for rule in policy.get(key, [])
    )


def _labels(component: str) -> dict[str, str]:
    if component in SETTINGS:
        return of_kind("Deployment")[f"shop-{component}"]["spec"]["template"]["metadata"][
            "labels"]
    return of_kind("Job")["shop-bootstrap"]["spec"]["template"]["metadata"]["labels"]


OUTSIDE: Peer = ("", {})
POOLER: Peer = ("shop", {"cnpg.io/poolerName": "shop-db-pooler", "cnpg.io/cluster": "shop-db"})
POSTGRES: Peer = ("shop", {"cnpg.io/cluster": "shop-db", "cnpg.io/podRole": "instance"})
RABBITMQ: Peer = ("shop", {"app.kubernetes.io/name": "shop-mq"})


def test_only_the_gateway_takes_traffic_from_outside() -> None:
    assert _allowed("Ingress", _labels("gateway"), OUTSIDE, 8080)
    for service in SERVICES:
        assert not _allowed("Ingress", _labels(service), OUTSIDE, 8080), service
    for data in (POOLER, POSTGRES, RABBITMQ):
        for port in (5432, 5672, 15672):
            assert not _allowed("Ingress", data[1], OUTSIDE, port), data


def test_the_services_are_reached_by_the_gateway_alone() -> None:
    for service in SERVICES:
        assert _allowed("Ingress", _labels(service), ("shop", _labels("gateway")), 8080)
        assert _allowed("Egress", _labels("gateway"), ("shop", _labels(service)), 8080)
        for other in SERVICES:
            assert not _allowed("Egress", _labels(other), ("shop", _labels(service)), 8080), (
                other, service)


def test_each_component_reaches_only_what_it_needs() -> None:
    for service in SERVICES:
        labels = _labels(service)
        assert _allowed("Egress", labels, POOLER, 5432), service
        assert _allowed("Ingress", POOLER[1], ("shop", labels), 5432), service
        assert _allowed("Egress", labels, RABBITMQ, 5672), service
        assert not _allowed("Egress", labels, OUTSIDE, 443), service
        listens = service == "notifications"
        assert _allowed("Egress", labels, POSTGRES, 5432) is listens, service
    gateway = _labels("gateway")
    assert not _allowed("Egress", gateway, POOLER, 5432)
    assert _allowed("Egress", gateway, RABBITMQ, 5672)
    bootstrap = _labels("bootstrap")
    assert _allowed("Egress", bootstrap, POSTGRES, 5432)
    assert _allowed("Egress", bootstrap, RABBITMQ, 15672)
    assert _allowed("Ingress", RABBITMQ[1], ("shop", bootstrap), 15672)
    assert not _allowed("Ingress", RABBITMQ[1], ("shop", gateway), 15672)


def test_prometheus_scrapes_the_metrics_port_and_nothing_else() -> None:
    prometheus: Peer = ("monitoring", {})
    for component in SETTINGS:
        assert _allowed("Ingress", _labels(component), prometheus, 9080), component
        if component != "gateway":
            assert not _allowed("Ingress", _labels(component), prometheus, 8080), component


# The policy scanner ------------------------------------------------------------------------


def test_the_policy_scanner_finds_nothing_but_what_is_waived(tmp_path: Path) -> None:
    manifests = tmp_path / "shop.yaml"
    manifests.write_text(yaml.safe_dump_all(rendered()))
    result = subprocess.run(
        [str(CHECKOV), "--file", str(manifests), "--framework", "kubernetes",
         "--output", "json", "--quiet", "--skip-download", "--compact"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    report = json.loads(result.stdout)
    assert report["check_type"] == "kubernetes"
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 100  # it did look: hundreds of checks pass
    failed = report["results"]["failed_checks"]
    unwaived = sorted({(c["check_id"], c["resource"]) for c in failed
                       if c["check_id"] not in WAIVED})
    assert not unwaived, unwaived
