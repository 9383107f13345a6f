"""``redline.yaml``: the one typed config that drives rules, dashboards and the limiter.

A threshold appears in exactly one place: ``targets[*].saturation_concurrency`` (the knee,
written by ``redline sweep``). Warn and page levels are fractions of it.

Example::

    from redline.config import load_config
    cfg = load_config("redline.yaml")
    for target in cfg.targets:
        print(target.name, target.page_concurrency)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

__all__ = [
    "ConfigError",
    "Config",
    "Target",
    "Match",
    "Slo",
    "Durations",
    "LimiterSettings",
    "WebhookReceiver",
    "PagerDutyReceiver",
    "SlackReceiver",
    "load_config",
    "DEFAULT_CONFIG_PATH",
]

DEFAULT_CONFIG_PATH = Path("redline.yaml")

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
PromDuration = Annotated[str, Field(pattern=_DURATION.pattern,
                                    description="Prometheus duration, e.g. 30s, 2m, 1h")]


def duration_seconds(value: str) -> float:
    """Seconds in a Prometheus duration like ``90s`` or ``2m``."""
    number, unit = _DURATION.match(value).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


class ConfigError(Exception):
    """A config problem a user can act on: names the file, the key and what was expected."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Strict):
    """Which series belong to a target. Empty fields match anything.

    ``service`` is the OTel ``service.name`` (the ``job`` label in Prometheus);
    ``server_address`` and ``model`` are the GenAI attributes of the model calls.
    """

    service: str | None = None
    server_address: str | None = None
    model: str | None = None
    gpu_job: str | None = Field(
        None, description="Prometheus job of this target's GPU metrics (redline's NVML "
        "service.name or the DCGM exporter's scrape job); default: service, else every GPU.")


class Slo(_Strict):
    ttft_p95_seconds: float = Field(2.0, gt=0)
    latency_p95_seconds: float = Field(20.0, gt=0)
    error_ratio: float = Field(0.01, gt=0, lt=1)


class Durations(_Strict):
    """How long a condition must hold before an alert fires (Prometheus ``for``)."""

    warn: PromDuration = "2m"
    page: PromDuration = "1m"
    latency: PromDuration = "5m"
    absent: PromDuration = "2m"
    predict_window: PromDuration = "10m"
    predict_horizon: PromDuration = "15m"
    absent_lookback: PromDuration = Field(
        "6h", description="Telemetry-absent fires only for targets that reported within this "
        "window, so an empty Prometheus (a fresh install, a test) stays silent.")

    @model_validator(mode="after")
    def _lookback_longer(self) -> Durations:
        if duration_seconds(self.absent_lookback) <= duration_seconds(self.absent):
            raise ValueError(f"absent_lookback ({self.absent_lookback}) must be longer than "
                             f"absent ({self.absent})")
        return self


class LimiterSettings(_Strict):
    """Caps for :class:`redline.Limiter`. ``model_cap`` defaults to the warn level."""

    enabled: bool = False
    model_cap: int | None = Field(None, gt=0)
    tool_cap: int = Field(32, gt=0)
    queue_limit: int = Field(1024, ge=0)
    retry_budget_ratio: float = Field(0.1, ge=0, le=1)
    retry_budget_window_seconds: float = Field(10.0, gt=0)


class Target(_Strict):
    """A service, server address or model with a measured saturation point."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$")
    match: Match = Match()
    saturation_concurrency: float = Field(
        gt=0, description="In-flight concurrency at the knee, measured by `redline sweep`.")
    saturation_sessions: float | None = Field(
        None, gt=0, description="Concurrent agent sessions at the knee, measured by "
        "`redline sweep --unit sessions`; when set, the rules warn on sessions too.")
    warn_fraction: float = Field(0.7, gt=0, lt=1)
    page_fraction: float = Field(0.85, gt=0, lt=1)
    durations: Durations = Durations()
    slo: Slo = Slo()
    retry_storm_ratio: float = Field(
        0.1, gt=0, le=1, description="Retries per request above which a retry storm is declared.")
    gpu_utilization_ceiling: float = Field(0.95, gt=0, le=1)
    predict_floor_fraction: float = Field(
        0.5, gt=0, lt=1, description="The saturation forecast only alerts at or above this "
        "fraction of the knee, so a ramp from idle does not warn.")
    work_conserving_violation_ratio: float = Field(
        0.05, gt=0, le=1, description="Fraction of time the limiter may hold requests queued "
        "while slots are free before the work-conserving alert fires.")
    limiter: LimiterSettings = LimiterSettings()

    @model_validator(mode="after")
    def _warn_below_page(self) -> Target:
        if self.warn_fraction >= self.page_fraction:
            raise ValueError(
                f"warn_fraction ({self.warn_fraction}) must be below page_fraction "
                f"({self.page_fraction})")
        if self.predict_floor_fraction >= self.page_fraction:
            raise ValueError(
                f"predict_floor_fraction ({self.predict_floor_fraction}) must be below "
                f"page_fraction ({self.page_fraction})")
        return self

    @property
    def predict_floor_concurrency(self) -> float:
        return round(self.saturation_concurrency * self.predict_floor_fraction, 3)

    @property
    def warn_sessions(self) -> float | None:
        """The session warn level, or ``None`` without a measured session capacity."""
        if self.saturation_sessions is None:
            return None
        return round(self.saturation_sessions * self.warn_fraction, 3)

    @property
    def warn_concurrency(self) -> float:
        return round(self.saturation_concurrency * self.warn_fraction, 3)

    @property
    def page_concurrency(self) -> float:
        return round(self.saturation_concurrency * self.page_fraction, 3)

    @property
    def model_cap(self) -> int:
        """The limiter cap: configured, else the warn level (below the knee)."""
        return self.limiter.model_cap or max(1, int(self.warn_concurrency))


class _Secret(_Strict):
    """Secrets come from the environment or a file, never from the YAML itself."""

    @staticmethod
    def _check_ref(env: str | None, file: str | None, what: str) -> None:
        if not (env or file):
            raise ValueError(f"set {what}_env (an environment variable) or {what}_file")


class WebhookReceiver(_Secret):
    """A plain webhook. ``compose_url`` is its address from inside docker compose
    (default: ``url`` with a loopback host replaced by ``host.docker.internal``)."""

    type: Literal["webhook"]
    name: str
    url: str = Field(pattern=r"^https?://")
    compose_url: str | None = Field(None, pattern=r"^https?://")


class PagerDutyReceiver(_Secret):
    type: Literal["pagerduty"]
    name: str
    routing_key_env: str | None = None
    routing_key_file: str | None = None

    @model_validator(mode="after")
    def _has_key(self) -> PagerDutyReceiver:
        self._check_ref(self.routing_key_env, self.routing_key_file, "routing_key")
        return self


class SlackReceiver(_Secret):
    type: Literal["slack"]
    name: str
    channel: str
    api_url_env: str | None = None
    api_url_file: str | None = None

    @model_validator(mode="after")
    def _has_url(self) -> SlackReceiver:
        self._check_ref(self.api_url_env, self.api_url_file, "api_url")
        return self


Receiver = Annotated[WebhookReceiver | PagerDutyReceiver | SlackReceiver,
                     Field(discriminator="type")]


class Pager(_Strict):
    """Where Alertmanager sends warn and page notifications (receiver names)."""

    receivers: list[Receiver] = Field(min_length=1)
    page_receiver: str
    warn_receiver: str
    group_wait: PromDuration = "5s"
    # Shorter than any page's `for:`, so a resolution is always sent before the same
    # page can fire again, and a re-firing page waits at most this long (docs/alerts.md).
    group_interval: PromDuration = "10s"
    repeat_interval: PromDuration = "4h"
    secrets_dir: str = Field(
        ".cache/secrets", description="Where the native Alertmanager reads secrets given as "
        "*_env (rendered there by `redline rules --render-secrets`); relative to its cwd.")

    @model_validator(mode="after")
    def _known_receivers(self) -> Pager:
        names = {r.name for r in self.receivers}
        for key in ("page_receiver", "warn_receiver"):
            if getattr(self, key) not in names:
                raise ValueError(f"{key} {getattr(self, key)!r} is not one of the receivers "
                                 f"{sorted(names)}")
        return self


class Config(_Strict):
    """The whole ``redline.yaml``."""

    version: Literal[1] = 1
    evaluation_interval: PromDuration = "5s"
    runbook_base_url: str = "https://github.com/redline-dev/redline/blob/main/alerts/runbooks"
    targets: list[Target] = Field(min_length=1)
    pager: Pager

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, targets: list[Target]) -> list[Target]:
        names = [t.name for t in targets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"target names must be unique; repeated: {dupes}")
        return targets

    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        raise ConfigError(f"no target named {name!r}; known: {[t.name for t in self.targets]}")


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_config(path: str | os.PathLike[str] = DEFAULT_CONFIG_PATH) -> Config:
    """Read and validate a ``redline.yaml``.

    Raises:
        ConfigError: the file is missing, is not YAML, or a key is wrong; the message
            names the file, the key and what was expected.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (copy redline.example.yaml to start)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: invalid config:"]
        for err in exc.errors():
            got = err.get("input")
            got_s = "" if isinstance(got, dict | list) else f" (got {got!r})"
            lines.append(f"  key {_loc(err['loc'])}: {err['msg']}{got_s}")
        raise ConfigError("\n".join(lines)) from None
