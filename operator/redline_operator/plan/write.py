"""Write a plan's measured numbers into ``redline.yaml`` (``targets[].planning``).

Round-trip like the sweep's threshold writer: comments, order and the other settings stay;
the new text is validated against the schema and replaces the file atomically, so a
failed plan never leaves a half-written config. ``redline autoscaling`` reads these keys.

Example::

    write_plan(Path("redline.yaml"), plan)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from redline.config import Config, ConfigError
from redline_operator.plan.plan import TargetPlan
from redline_operator.sweep.report import atomic_write_text
from redline_operator.sweep.yaml_update import _dump, _house_style

__all__ = ["write_plan", "update_plan_text"]


def update_plan_text(text: str, plan: TargetPlan, *, source: str = "redline.yaml") -> str:
    """``text`` with the plan's throughput and replica counts under the target's planning."""
    try:
        y = _house_style(text)
        doc = y.load(text)
    except YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    targets = doc.get("targets") if hasattr(doc, "get") else None
    entry = next((t for t in targets or [] if hasattr(t, "get")
                  and t.get("name") == plan.target), None)
    if entry is None:
        raise ConfigError(f"{source}: no target named {plan.target!r} under targets")
    planning = entry.get("planning")
    if planning is None:
        planning = entry["planning"] = CommentedMap()
    values = {"throughput_per_replica_rps": round(plan.throughput_per_replica_rps, 2),
              "min_replicas": plan.min_replicas, "max_replicas": plan.max_replicas}
    for key, value in values.items():
        if key in planning:
            planning[key] = value
        else:  # new keys go before a nested autoscale block, whose comments stay with it
            keys = list(planning)
            at = keys.index("autoscale") if "autoscale" in keys else len(keys)
            planning.insert(at, key, value)
    new_text = _dump(y, doc)
    try:
        Config.model_validate(YAML(typ="safe").load(new_text))
    except ValidationError as exc:
        raise ConfigError(f"{source}: would be invalid after writing the plan of "
                          f"{plan.target!r}: {exc}") from None
    return new_text


def write_plan(path: Path, plan: TargetPlan) -> None:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    atomic_write_text(path, update_plan_text(text, plan, source=str(path)))
