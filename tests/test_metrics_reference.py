"""docs/reference/metrics.md lists every metric of the three services with its type and labels, checked here against
their registries (DESIGN §12); the alerts and the dashboard use only exported names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from auth_server.metrics import Metrics as AuthMetrics
from bff.metrics import Metrics as BffMetrics
from resource_server.app import Metrics as ResourceMetrics

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reference" / "metrics.md"
ROW = re.compile(r"^\| `([a-z_]+)` \| (counter|gauge|histogram) \|([^|]*)\|", re.M)


def exported() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name as queried (counters with _total) -> (type, labels), from the registries themselves."""
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for metrics in (BffMetrics(), ResourceMetrics(), AuthMetrics()):
        registry: Any = metrics.registry
        for collector in registry._collector_to_names:
            name = collector._name + ("_total" if collector._type == "counter" else "")
            found[name] = (collector._type, tuple(collector._labelnames))
    return found


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    return {
        name: (kind, tuple(re.findall(r"`([a-z_]+)`", labels))) for name, kind, labels in ROW.findall(PAGE.read_text())
    }


def queryable() -> set[str]:
    """Every series name a query may use: histograms' _bucket/_sum/_count beside the documented names."""
    names = set()
    for name, (kind, _) in exported().items():
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def metric_names(expression: str) -> set[str]:
    """The metric names in a PromQL expression: identifiers of our prefixes (label names and functions are not)."""
    without_labels = re.sub(r"\{[^}]*\}", "", expression)
    return set(re.findall(r"\b((?:bff|rs|auth)_[a-z_]+)\b", without_labels))


def test_the_catalogue_is_the_registries() -> None:
    assert documented() == exported()


def test_the_alerts_use_only_exported_metrics() -> None:
    import yaml

    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert len(expressions) >= 6
    used = set().union(*(metric_names(e) for e in expressions))
    assert used and used <= queryable(), used - queryable()


def test_the_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "jwt-bff.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(expressions) >= 8
    used = set().union(*(metric_names(e) for e in expressions))
    assert used <= queryable(), used - queryable()
    for name in ("bff_upstream_requests_total", "bff_provider_requests_total", "bff_upstream_request_duration_seconds"):
        assert any(name in e for e in expressions), name


def test_the_name_check_catches_a_typo() -> None:
    assert metric_names('sum(rate(bff_upstream_request_total{route="x"}[5m]))') - queryable() == {
        "bff_upstream_request_total"
    }
