"""Autoscaler configs (KEDA ScaledObject, HPA + prometheus-adapter rule) from the plan.

Example::

    from redline_operator.autoscaling import generate
    files = generate(load_config("redline.yaml"))
"""

from redline_operator.autoscaling.generate import diff, generate, write
from redline_operator.autoscaling.manifests import (
    EXTERNAL_METRIC,
    adapter_config,
    hpa,
    keda_scaled_object,
)

__all__ = ["EXTERNAL_METRIC", "adapter_config", "diff", "generate", "hpa",
           "keda_scaled_object", "write"]
