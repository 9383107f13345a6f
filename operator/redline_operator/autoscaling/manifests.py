"""Kubernetes autoscaling objects from a target's plan (``targets[].planning``).

Two alternatives, generated side by side (apply one, not both: KEDA creates and owns an
HPA of its own for the same Deployment):

* a KEDA ``ScaledObject`` (``keda.sh/v1alpha1``) with a ``prometheus`` trigger on the
  target's in-flight model calls (the same PromQL as the ``redline:target_concurrency:sum``
  recording rule), ``metricType: AverageValue`` and ``threshold`` = the concurrency target
  per replica, so KEDA asks for ``ceil(in flight / target)`` replicas: it scales out when
  every replica has reached its target (seed note 004);
* an ``autoscaling/v2`` HPA on the External metric ``redline_target_concurrency``
  (``target=<name>``) with ``AverageValue`` = the same target, and the prometheus-adapter
  rule that serves that metric from the recording rule.

Bounds are ``planning.min_replicas`` / ``max_replicas`` as ``redline plan --write`` wrote
them.

Example::

    keda_scaled_object(cfg.target("sim"))["spec"]["triggers"][0]["metadata"]["threshold"]
    # '12'
"""

from __future__ import annotations

from redline.config import Target
from redline_operator.alerts import queries as q

__all__ = ["EXTERNAL_METRIC", "keda_scaled_object", "hpa", "adapter_config",
           "adapter_configmap", "missing_plan"]

#: The External metric the prometheus-adapter rule serves (from the recording rule).
EXTERNAL_METRIC = "redline_target_concurrency"
_MANAGED = {"app.kubernetes.io/managed-by": "redline"}


def missing_plan(target: Target) -> list[str]:
    """Planning keys an autoscaled target still lacks (empty when it can be generated)."""
    p = target.planning
    return [k for k in ("min_replicas", "max_replicas") if getattr(p, k) is None]


def _meta(target: Target) -> dict:
    a = target.planning.autoscale
    return {"name": f"redline-{target.name.lower().replace('_', '-').replace(':', '-')}",
            "namespace": a.namespace,
            "labels": {**_MANAGED, "redline.target": _label_value(target.name)}}


def _label_value(name: str) -> str:
    return name.replace(":", "_")


def _scale_target(target: Target) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "name": target.planning.autoscale.deployment}


def keda_scaled_object(target: Target) -> dict:
    p, a = target.planning, target.planning.autoscale
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(target),
        "spec": {
            "scaleTargetRef": _scale_target(target),
            "pollingInterval": a.polling_interval_seconds,
            "cooldownPeriod": a.cooldown_seconds,
            "minReplicaCount": p.min_replicas,
            "maxReplicaCount": p.max_replicas,
            "triggers": [{
                "type": "prometheus",
                "name": "in-flight-per-replica",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": a.prometheus_url,
                    "query": q.concurrency_raw(target),
                    "threshold": str(target.concurrency_target),
                    "ignoreNullValues": "true",
                },
            }],
        },
    }


def hpa(target: Target) -> dict:
    p, a = target.planning, target.planning.autoscale
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(target),
        "spec": {
            "scaleTargetRef": _scale_target(target),
            "minReplicas": p.min_replicas,
            "maxReplicas": p.max_replicas,
            "metrics": [{
                "type": "External",
                "external": {
                    "metric": {"name": EXTERNAL_METRIC,
                               "selector": {"matchLabels": {"target": _label_value(target.name)}}},
                    "target": {"type": "AverageValue",
                               "averageValue": str(target.concurrency_target)},
                },
            }],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": a.cooldown_seconds}},
        },
    }


def adapter_config() -> dict:
    """prometheus-adapter ``externalRules``: the recorded concurrency, per ``target`` label.

    ``namespaced: false``: the series carry no namespace label (the adapter would add the
    HPA's namespace to the query otherwise).
    """
    series = q.CONCURRENCY
    return {"externalRules": [{
        "seriesQuery": f'{series}{{target!=""}}',
        "resources": {"namespaced": False},
        "name": {"matches": f"^{series}$", "as": EXTERNAL_METRIC},
        "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (target)",
    }]}


def adapter_configmap(config_text: str) -> dict:
    """The adapter's config file as a ConfigMap (mount it as the adapter's ``--config``)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "redline-prometheus-adapter", "labels": dict(_MANAGED)},
            "data": {"config.yaml": config_text}}
