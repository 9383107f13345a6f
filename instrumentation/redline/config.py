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

import math
import os
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from redline.telemetry import DEFAULT_EXPORT_INTERVAL_MS

__all__ = [
    "ConfigError",
    "Config",
    "Target",
    "Match",
    "Slo",
    "Durations",
    "LimiterSettings",
    "Planning",
    "Autoscale",
    "WebhookReceiver",
    "PagerDutyReceiver",
    "SlackReceiver",
    "load_config",
    "duration_seconds",
    "validation_message",
    "MAX_CONFIG_BYTES",
    "DEFAULT_CONFIG_PATH",
    "FRESH_EXPORTS",
    "fresh_window",
]

DEFAULT_CONFIG_PATH = Path("redline.yaml")

_DURATION = re.compile(r"^(\d{1,9})(ms|s|m|h|d)$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}

#: The largest config file redline reads; a real redline.yaml is a few kilobytes.
MAX_CONFIG_BYTES = 1024 * 1024

#: A series counts as live while its newest sample is younger than this many export
#: intervals: one missed or late export is tolerated, and a dead process drops out within
#: 2 intervals (+ one rule evaluation), inside the 3 + 1 that redline promises.
FRESH_EXPORTS = 2


def duration_seconds(value: str) -> float:
    """Seconds in a Prometheus duration like ``90s`` or ``2m``.

    Raises:
        ValueError: ``value`` is not a number followed by ms, s, m, h or d.
    """
    m = _DURATION.match(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"{value!r} is not a duration like 90s, 15m, 6h or 500ms")
    number, unit = m.groups()
    return int(number) * _UNIT_S[unit]


def _duration(low_s: float, high_s: float, *, whole_seconds: bool = True):
    """A validator of a Prometheus duration between ``low_s`` and ``high_s`` seconds."""

    def check(value: str) -> str:
        seconds = duration_seconds(value)
        if not low_s <= seconds <= high_s:
            raise ValueError(f"must be between {_human(low_s)} and {_human(high_s)}")
        if whole_seconds and not float(seconds).is_integer():
            raise ValueError("must be a whole number of seconds")
        return value

    return AfterValidator(check)


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return f"{seconds:g}s"


_DurationStr = Annotated[str, Field(pattern=_DURATION.pattern,
                                    description="Prometheus duration, e.g. 30s, 2m, 1h")]
PromDuration = _DurationStr  # kept for importers; the fields below carry bounds


def Dur(low_s: float, high_s: float):  # noqa: N802 - a type factory
    """A Prometheus duration bounded to [low_s, high_s] seconds (whole seconds)."""
    return Annotated[_DurationStr, _duration(low_s, high_s)]


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (newline, tab, NUL...)")
    return value


def Line(max_length: int):  # noqa: N802 - a type factory
    """A single-line string of at most ``max_length`` characters."""
    return Annotated[str, Field(max_length=max_length), AfterValidator(_no_control)]


def _http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[!-~]+", value):
        raise ValueError("must be an http:// or https:// URL of printable ASCII without "
                         "spaces")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL: {exc}") from None
    if not parts.hostname:
        raise ValueError("has no host")
    if "{{" in value or "}}" in value:
        raise ValueError("must not contain '{{' or '}}' (it is rendered as a Go template)")
    return value


HttpUrl = Annotated[str, Field(max_length=2048), AfterValidator(_http_url)]

#: A label value redline matches on: bounded, any character (quotes and newlines are
#: escaped wherever the value enters PromQL, YAML or a promtool test).
LabelValue = Annotated[str, Field(min_length=1, max_length=1024)]

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
                               description="an environment variable name")]

#: Knees are measured in requests in flight: below 1 there is nothing to queue behind;
#: above a million no single target is one service any more.
MAX_SATURATION = 1_000_000


#: The apps' export interval unless redline.yaml says otherwise: redline's own default.
DEFAULT_EXPORT_INTERVAL = f"{DEFAULT_EXPORT_INTERVAL_MS // 1000}s"


def fresh_window(export_interval: str = DEFAULT_EXPORT_INTERVAL) -> str:
    """The freshness window for series exported every ``export_interval``, as a duration."""
    ms = round(duration_seconds(export_interval) * 1000 * FRESH_EXPORTS)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


class ConfigError(Exception):
    """A config problem a user can act on: names the file, the key and what was expected."""


class _Strict(BaseModel):
    # strict: YAML's `true` is not the number 1, and "16" is not 16; no inf or NaN.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Match(_Strict):
    """Which series belong to a target. Empty fields match anything.

    ``service`` is the OTel ``service.name`` (the ``job`` label in Prometheus);
    ``server_address`` and ``model`` are the GenAI attributes of the model calls.
    ``server_address`` may list several names of the same server, e.g.
    ``[127.0.0.1, sim]``: the native stack calls the sim on 127.0.0.1, docker compose
    by its service name ``sim``.
    """

    service: LabelValue | None = None
    server_address: LabelValue | list[LabelValue] | None = Field(
        None, description="server.address of the model calls; a list matches any of them "
        "(one server reached under several names).")
    model: LabelValue | None = None
    gpu_job: LabelValue | None = Field(
        None, description="Prometheus job of this target's GPU metrics (redline's NVML "
        "service.name or the DCGM exporter's scrape job); default: service, else every GPU.")

    @field_validator("server_address")
    @classmethod
    def _addresses_given(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not value:
            raise ValueError("expected an address or a non-empty list of addresses")
        return value

    @property
    def server_addresses(self) -> tuple[str, ...]:
        """Every address ``server_address`` names (empty: any address)."""
        if self.server_address is None:
            return ()
        if isinstance(self.server_address, str):
            return (self.server_address,)
        return tuple(self.server_address)


class Slo(_Strict):
    ttft_p95_seconds: float = Field(2.0, ge=0.001, le=3600)
    latency_p95_seconds: float = Field(20.0, ge=0.001, le=86400)
    error_ratio: float = Field(
        0.01, ge=0.00001, le=0.06, description="Allowed failed share. At most 0.06: the "
        "fast-burn page fires at 14.4 times this ratio, which must stay below 100%.")


class Durations(_Strict):
    """How long a condition must hold before an alert fires (Prometheus ``for``)."""

    warn: Dur(0, 3600) = "2m"
    page: Dur(0, 3600) = "1m"
    latency: Dur(0, 3600) = "5m"
    absent: Dur(60, 3600) = "2m"
    predict_window: Dur(60, 86400) = "10m"
    predict_horizon: Dur(60, 86400) = "15m"
    absent_lookback: Dur(120, 86400) = Field(
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
    model_cap: int | None = Field(None, gt=0, le=MAX_SATURATION)
    tool_cap: int = Field(32, gt=0, le=MAX_SATURATION)
    queue_limit: int = Field(1024, ge=0, le=100 * MAX_SATURATION)
    retry_budget_ratio: float = Field(0.1, ge=0, le=1)
    retry_budget_window_seconds: float = Field(10.0, gt=0, le=86400)


class Autoscale(_Strict):
    """Where the generated KEDA ScaledObject and HPA point (``redline autoscaling``)."""

    deployment: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                            description="Kubernetes Deployment of the target's replicas.")
    namespace: str = Field("default", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    prometheus_url: str = Field("http://prometheus.monitoring.svc:9090", pattern=r"^https?://",
                                description="Prometheus as KEDA reaches it in the cluster.")
    polling_interval_seconds: int = Field(15, ge=1)
    cooldown_seconds: int = Field(300, ge=0)


class Planning(_Strict):
    """Capacity plan of a target: ``redline plan`` fills the measured keys.

    The concurrency target per replica is ``floor(target_fraction * saturation_concurrency)``
    (at or below the knee, at least 1); ``throughput_per_replica_rps`` is the rate one
    replica serves there; min/max replicas follow seed note 004.
    """

    target_fraction: float = Field(0.75, gt=0, le=1, description="Concurrency target per "
                                   "replica as a fraction of the knee.")
    redundancy: int = Field(1, ge=0, description="Replicas added to baseline / throughput.")
    buffer: int = Field(2, ge=0, description="Replicas added to peak / throughput.")
    throughput_per_replica_rps: float | None = Field(
        None, gt=0, description="Requests/s one replica serves at the concurrency target "
        "(written by `redline plan --write`).")
    min_replicas: int | None = Field(None, ge=1)
    max_replicas: int | None = Field(None, ge=1)
    fleet_floor_fraction: float = Field(
        0.5, gt=0, lt=1, description="The fleet forecast only alerts once the request rate "
        "is at least this fraction of the fleet's capacity at max_replicas.")
    autoscale: Autoscale | None = None

    @model_validator(mode="after")
    def _min_below_max(self) -> Planning:
        if self.min_replicas and self.max_replicas and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must not exceed "
                             f"max_replicas ({self.max_replicas})")
        return self


class Target(_Strict):
    """A service, server address or model with a measured saturation point."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$", max_length=100)
    match: Match = Match()
    saturation_concurrency: float = Field(
        ge=1, le=MAX_SATURATION,
        description="In-flight concurrency at the knee, measured by `redline sweep` "
        "(requests in flight: at least 1, at most 1,000,000).")
    saturation_sessions: float | None = Field(
        None, ge=1, le=MAX_SATURATION, description="Concurrent agent sessions at the knee, "
        "measured by `redline sweep --unit sessions`; when set, the rules warn on sessions "
        "too.")
    warn_fraction: float = Field(0.7, ge=0.01, lt=1)
    page_fraction: float = Field(0.85, ge=0.01, lt=1)
    durations: Durations = Durations()
    slo: Slo = Slo()
    retry_storm_ratio: float = Field(
        0.1, ge=0.001, le=10,
        description="Retries per request above which a retry storm is declared.")
    gpu_utilization_ceiling: float = Field(0.95, ge=0.05, le=1)
    predict_floor_fraction: float = Field(
        0.5, ge=0.01, lt=1, description="The saturation forecast only alerts at or above this "
        "fraction of the knee, so a ramp from idle does not warn.")
    work_conserving_violation_ratio: float = Field(
        0.05, ge=0.001, le=0.9, description="Fraction of time the limiter may hold requests queued "
        "while slots are free before the work-conserving alert fires.")
    limiter: LimiterSettings = LimiterSettings()
    planning: Planning = Planning()

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
        # Levels are rounded to 3 decimals: they must stay apart and above zero, or an
        # alert fires at 0 in flight (always) or warn and page become the same alert.
        levels = [("predict floor", self.predict_floor_concurrency),
                  ("warn", self.warn_concurrency), ("page", self.page_concurrency),
                  ("saturation", round(self.saturation_concurrency, 3))]
        if levels[1][1] <= 0:
            raise ValueError(f"the warn level saturation_concurrency x warn_fraction is "
                             f"{self.saturation_concurrency * self.warn_fraction:g}, which "
                             f"rounds to 0: every alert would always fire")
        if not levels[1][1] < levels[2][1] < levels[3][1]:
            raise ValueError(
                "warn, page and saturation levels must differ after rounding to 3 decimals, "
                "got " + ", ".join(f"{n} {v:g}" for n, v in levels[1:]))
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
    def concurrency_target(self) -> int:
        """Concurrency target per replica: at or below the knee, at least 1."""
        return max(1, math.floor(self.saturation_concurrency * self.planning.target_fraction
                                 + 1e-9))

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
    name: Line(100)
    url: HttpUrl
    compose_url: HttpUrl | None = None


class PagerDutyReceiver(_Secret):
    type: Literal["pagerduty"]
    name: Line(100)
    routing_key_env: EnvName | None = None
    routing_key_file: Line(4096) | None = None

    @model_validator(mode="after")
    def _has_key(self) -> PagerDutyReceiver:
        self._check_ref(self.routing_key_env, self.routing_key_file, "routing_key")
        return self


class SlackReceiver(_Secret):
    type: Literal["slack"]
    name: Line(100)
    channel: Line(100)
    api_url_env: EnvName | None = None
    api_url_file: Line(4096) | None = None

    @model_validator(mode="after")
    def _has_url(self) -> SlackReceiver:
        self._check_ref(self.api_url_env, self.api_url_file, "api_url")
        return self


Receiver = Annotated[WebhookReceiver | PagerDutyReceiver | SlackReceiver,
                     Field(discriminator="type")]


class Pager(_Strict):
    """Where Alertmanager sends warn and page notifications (receiver names)."""

    receivers: list[Receiver] = Field(min_length=1, max_length=100)
    page_receiver: Line(100)
    warn_receiver: Line(100)
    group_wait: Dur(0, 86400) = "5s"
    # Shorter than any page's `for:`, so a resolution is always sent before the same
    # page can fire again, and a re-firing page waits at most this long (docs/alerts.md).
    group_interval: Dur(1, 86400) = "10s"
    repeat_interval: Dur(60, 30 * 86400) = "4h"
    secrets_dir: Line(4096) = Field(
        ".cache/secrets", description="Where the native Alertmanager reads secrets given as "
        "*_env (rendered there by `redline rules --render-secrets`); relative to its cwd.")

    @model_validator(mode="after")
    def _known_receivers(self) -> Pager:
        listed = [r.name for r in self.receivers]
        repeated = sorted({n for n in listed if listed.count(n) > 1})
        if repeated:
            raise ValueError(f"receiver names must be unique; repeated: {repeated}")
        names = set(listed)
        for key in ("page_receiver", "warn_receiver"):
            if getattr(self, key) not in names:
                raise ValueError(f"{key} {getattr(self, key)!r} is not one of the receivers "
                                 f"{sorted(names)}")
        return self


class Config(_Strict):
    """The whole ``redline.yaml``."""

    version: Literal[1] = 1
    evaluation_interval: Dur(1, 300) = "5s"
    export_interval: Dur(1, 300) = Field(
        DEFAULT_EXPORT_INTERVAL, description="How often the apps export their metrics "
        "(OTEL_METRIC_EXPORT_INTERVAL; redline's default is 5 s). A gauge pushed over OTLP "
        "gets no staleness marker when its process dies, so every concurrency redline reads "
        "counts only series refreshed within FRESH_EXPORTS export intervals (fresh_window).")
    runbook_base_url: HttpUrl | None = Field(
        None, description="Where alerts/runbooks/ is served; every "
        "alert's runbook_url is this + '/<Alert>.md'. Required by `redline rules`: there is "
        "no default, so a page never links to a page that does not exist. The local pager "
        "(`redline stack up`) serves them at http://127.0.0.1:9096/runbooks; in production "
        "use where your repository or wiki serves alerts/runbooks/.")
    targets: list[Target] = Field(min_length=1, max_length=200)
    pager: Pager

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, targets: list[Target]) -> list[Target]:
        names = [t.name for t in targets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"target names must be unique; repeated: {dupes}")
        return targets

    @property
    def fresh_window(self) -> str:
        """In-flight series with no sample within this window belong to a dead process."""
        return fresh_window(self.export_interval)

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
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (copy redline.example.yaml to start)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a redline.yaml file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; a redline.yaml "
                          "is a few kilobytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: byte {raw[exc.start]:#04x} is not UTF-8; "
                          "save the file as UTF-8") from None
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(path, exc)) from None


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def validation_message(path: str | os.PathLike[str], exc: ValidationError) -> str:
    """A pydantic error as lines naming the file, each key and what was expected."""
    lines = [f"{path}: invalid config:"]
    for err in exc.errors()[:20]:
        got = err.get("input")
        got_s = "" if isinstance(got, dict | list) else f" (got {_short(got)})"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  key {_loc(err['loc'])}: {msg}{got_s}")
    if exc.error_count() > 20:
        lines.append(f"  ... and {exc.error_count() - 20} more")
    return "\n".join(lines)
