"""The generated rules as Kubernetes objects: one ``PrometheusRule`` per target.

For the Prometheus Operator (or anything that reads ``monitoring.coreos.com/v1``
PrometheusRule, such as a Thanos ruler managed by it). The ``spec`` is exactly the
groups of ``alerts/<target>.rules.yml`` and ``<target>.long.rules.yml``, so
``promtool check rules`` on the spec checks what the cluster will evaluate.

Example::

    redline rules --format prometheus-operator > k8s/redline-rules.yaml
"""

from __future__ import annotations

from redline.config import Config
from redline_operator.alerts.rules import target_rule_files
from redline_operator.alerts.writer import dump_yaml

__all__ = ["prometheus_rules", "render"]

API_VERSION = "monitoring.coreos.com/v1"


def prometheus_rules(cfg: Config, namespace: str | None = None,
                     labels: dict[str, str] | None = None) -> list[dict]:
    """One PrometheusRule object per target of ``cfg``.

    Args:
        namespace: ``metadata.namespace``; omitted when None (``kubectl -n`` decides).
        labels: extra ``metadata.labels``, e.g. the ``ruleSelector`` of your Prometheus.
    """
    out = []
    for target in cfg.targets:
        groups = [g for content in target_rule_files(cfg, target).values()
                  for g in content["groups"]]
        meta: dict = {"name": f"redline-{target.name}".lower().replace("_", "-").replace(
            ".", "-").replace(":", "-"),
            "labels": {"app.kubernetes.io/part-of": "redline", **(labels or {})}}
        if namespace:
            meta["namespace"] = namespace
        out.append({"apiVersion": API_VERSION, "kind": "PrometheusRule", "metadata": meta,
                    "spec": {"groups": groups}})
    return out


def render(cfg: Config, source: str = "redline.yaml", **kwargs) -> str:
    """The objects as one multi-document YAML text with the generated header."""
    docs = [dump_yaml(obj, source) for obj in prometheus_rules(cfg, **kwargs)]
    first, *rest = docs
    body = [first] + ["---\n" + d.split("\n", 1)[1] if d.startswith("#") else "---\n" + d
                      for d in rest]
    return "".join(body)
