"""deploy/observability: the alerting rules, their unit tests, the Grafana dashboard and the
Kubernetes ConfigMaps made of them.

promtool (scripts/ensure-promtool) checks the rules and the Prometheus config, and runs each
rule's cases, with series that fire it and series that do not. The dashboard's and the rules'
queries are parsed by promtool too, and may name only metrics the running components expose.
"""

import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import COMPONENTS, System

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
RULES = OBSERVABILITY / "alerts.yml"
RULE_TESTS = OBSERVABILITY / "alerts.test.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "shop.json"
ALERTING_DOC = ROOT / "docs" / "alerting.md"
KUBECTL = Path(sys.executable).with_name("kubectl")

# Series Prometheus makes itself, not the components.
PROMETHEUS_OWN = frozenset({"up", "ALERTS"})
# The words of PromQL that are not metric names, as far as these queries use them.
PROMQL_WORDS = frozenset({
    "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "delta", "deriv",
    "histogram_quantile", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "abs", "clamp_min", "clamp_max", "topk",
    "bottomk", "min_over_time", "max_over_time", "avg_over_time", "absent", "vector", "time",
})
# The names a family of each type gives its samples.
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}


def promtool(*args: str, cwd: Path = OBSERVABILITY) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("promtool")
    if executable is None:
        pytest.fail("promtool is not on PATH: run scripts/ensure-promtool")
    return subprocess.run(
        [executable, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def passed(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == 0


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]
            if "alert" in rule]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel["targets"]]


def as_prometheus_query(expr: str) -> str:
    """A dashboard query as Prometheus takes it: Grafana fills in $__rate_interval."""
    return expr.replace("$__rate_interval", "1m")


def metric_names(expr: str) -> set[str]:
    """The metrics a PromQL expression reads: what is left once strings, label matchers,
    ranges, groupings, variables and PromQL's own words are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    return set(re.findall(r"\b[A-Za-z_:][\w:]*", expr)) - PROMQL_WORDS


def exposed(text: str) -> dict[str, tuple[str, bool]]:
    """Every sample name a scrape offers, also of families with no sample yet (a labelled
    counter before its first increment): its family's type, and whether it has samples."""
    names = {}
    for family in text_string_to_metric_families(text):
        for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = (family.type, bool(family.samples))
    return names


# The rules and their tests ----------------------------------------------------------------


def test_the_rules_are_valid() -> None:
    result = promtool("check", "rules", RULES.name)
    assert passed(result), result.stdout + result.stderr
    assert f"{len(alerting_rules())} rules found" in result.stdout


def test_the_prometheus_config_is_valid_and_loads_the_rules() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert passed(result), result.stdout + result.stderr
    assert RULES.name in load_yaml(OBSERVABILITY / "prometheus.yml")["rule_files"]


def test_every_alert_fires_and_stays_quiet_as_its_cases_say() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert passed(result), result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_case_that_fires_it_and_one_that_does_not() -> None:
    tests = load_yaml(RULE_TESTS)
    assert tests["rule_files"] == [RULES.name]
    cases = [case for test in tests["tests"] for case in test["alert_rule_test"]]
    alerts = {rule["alert"] for rule in alerting_rules()}
    assert {case["alertname"] for case in cases if case["exp_alerts"]} == alerts
    assert {case["alertname"] for case in cases if not case["exp_alerts"]} == alerts


def test_every_alert_has_a_severity_a_summary_and_what_to_do_in_the_docs() -> None:
    doc = ALERTING_DOC.read_text()
    for rule in alerting_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert f"### {rule['alert']}" in doc, f"docs/alerting.md says nothing of {rule['alert']}"


# The dashboard ------------------------------------------------------------------------------


def test_the_dashboard_is_one_grafana_can_provision() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    (variable,) = board["templating"]["list"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in board["panels"]:
        position = panel["gridPos"]
        assert position["x"] >= 0 and position["x"] + position["w"] <= 24, panel["title"]
    for panel in dashboard_panels():
        assert panel["title"] and panel["targets"], panel
        # Whichever Prometheus the dashboard's variable names, never one fixed uid.
        assert panel["datasource"]["uid"] == "${" + variable["name"] + "}", panel["title"]


def test_the_dashboards_queries_are_promql_that_prometheus_parses(tmp_path: Path) -> None:
    """Each query, as a recording rule: `promtool check rules` parses every expression."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard_query_{number}", "expr": as_prometheus_query(expr)}
        for number, expr in enumerate(dashboard_queries())
    ]}]}
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", "queries.yml", cwd=tmp_path)
    assert passed(result), result.stdout + result.stderr


def test_the_dashboard_shows_what_every_alert_watches() -> None:
    shown = set().union(*map(metric_names, dashboard_queries()))
    for rule in alerting_rules():
        assert metric_names(rule["expr"]) <= shown, rule["alert"]


async def test_the_dashboard_and_the_rules_read_only_metrics_the_components_expose(
    system: System,
) -> None:
    """Every scrape runs that component's refreshers, so once all are scraped each gauge
    read has its series: one without any is a refresher not wired (or a name misspelt)."""
    offered: dict[str, tuple[str, bool]] = {}
    async with aiohttp.ClientSession() as session:
        for component in COMPONENTS:
            async with session.get(system.metrics_url(component) + "/metrics") as response:
                assert response.status == 200, component
                offered |= exposed(await response.text())
    queries = [*dashboard_queries(), *(rule["expr"] for rule in alerting_rules())]
    read = set().union(*map(metric_names, queries)) - PROMETHEUS_OWN
    assert read >= {"shop_ready", "shop_dead_letter_messages"}, "the names are found"
    assert read <= offered.keys(), sorted(read - offered.keys())
    unset = sorted(name for name in read if offered[name] == ("gauge", False))
    assert not unset, f"gauges with no series: {unset}"


def test_metric_names_reads_what_a_query_names() -> None:
    expr = ('sum by (component) (rate(shop_http_requests_total{status=~"5..", '
            'route!~"/health/.*"}[5m])) / on (component) group_left max(up{job="shop"})')
    assert metric_names(expr) == {"shop_http_requests_total", "up"}


# On Kubernetes --------------------------------------------------------------------------------


@cache
def rendered_config_maps() -> dict[str, dict[str, Any]]:
    output = subprocess.run(
        [str(KUBECTL), "kustomize", str(OBSERVABILITY)], capture_output=True, text=True,
        check=True,
    ).stdout
    return {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(output) if doc}


def test_on_kubernetes_the_same_files_become_config_maps() -> None:
    """`kubectl apply -k deploy/observability`: the rules for a Prometheus that mounts them,
    the dashboard for Grafana's dashboard sidecar; the files themselves, not copies."""
    maps = rendered_config_maps()
    assert set(maps) == {"shop-alerting-rules", "shop-grafana-dashboard"}
    for doc in maps.values():
        kubernetes_validate.validate(doc, "1.31", strict=True)
    assert maps["shop-alerting-rules"]["data"] == {RULES.name: RULES.read_text()}
    board = maps["shop-grafana-dashboard"]
    assert board["data"] == {DASHBOARD.name: DASHBOARD.read_text()}
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
