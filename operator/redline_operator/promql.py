"""PromQL building blocks and a small Prometheus HTTP API client.

The expressions here are the ones every reader of redline's data shares (the demo,
``redline top``, the tests), so a p95 means the same thing everywhere: a
``histogram_quantile`` over the *native* histogram that the Prometheus OTLP receiver
stores for redline's exponential histograms.

Example::

    prom = PrometheusClient("http://127.0.0.1:9090")
    p95 = prom.scalar(quantile(0.95, METRICS.OPERATION_DURATION, window="1m"))
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from redline.semconv import METRICS, Attr, MetricSpec, prom_label

__all__ = [
    "PrometheusClient",
    "PrometheusError",
    "quote",
    "selector",
    "target_matchers",
    "any_of",
    "in_flight",
    "quantile",
    "rate",
    "retries_per_second",
]


def quote(value: str) -> str:
    """``value`` as a PromQL double-quoted string literal (also valid in promtool series).

    Backslash and double quote are escaped, and so is every control character (a raw
    newline ends a PromQL string literal: the rule file would not load).
    """
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def selector(**labels: str | None) -> str:
    """A label selector body; ``None`` values are left out, values are quoted safely."""
    return ",".join(f"{key}={quote(value)}" for key, value in labels.items()
                    if value is not None)


def any_of(label: str, values: Sequence[str]) -> str:
    """``label="v"`` for one value; ``label=~"v1|v2"`` (values regex-escaped) for several."""
    if len(values) == 1:
        return selector(**{label: values[0]})
    regex = "|".join(re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", v) for v in values)
    return f"{label}=~{quote(regex)}"


def target_matchers(match) -> str:
    """Label matchers of a target's model-call series (``redline.config.Match``).

    A ``server_address`` list becomes one regex matcher, so the same rules and panels
    select one server under each of its names (127.0.0.1 natively, ``sim`` in compose).
    """
    parts = [selector(job=match.service)]
    if match.server_addresses:
        parts.append(any_of(prom_label(Attr.SERVER_ADDRESS), match.server_addresses))
    parts.append(selector(**{prom_label(Attr.REQUEST_MODEL): match.model}))
    return ",".join(p for p in parts if p)


def in_flight(sel: str = "", spec: MetricSpec = METRICS.REQUESTS_IN_FLIGHT) -> str:
    """Concurrency level: the in-flight gauge summed over every process and label."""
    return f"sum({spec.prom}{{{sel}}})"


def quantile(q: float, spec: MetricSpec, window: str = "1m", sel: str = "") -> str:
    """``q``-quantile over a native histogram, all series of the selector aggregated."""
    return f"histogram_quantile({q}, sum(rate({spec.prom}{{{sel}}}[{window}])))"


def rate(spec: MetricSpec, window: str = "1m", sel: str = "") -> str:
    """Per-second rate of a counter, or of a native histogram's observation count."""
    if spec.exponential:
        return f"sum(histogram_count(rate({spec.prom}{{{sel}}}[{window}])))"
    return f"sum(rate({spec.prom}{{{sel}}}[{window}]))"


def retries_per_second(window: str = "1m", sel: str = "") -> str:
    return rate(METRICS.RETRIES, window, sel)


class PrometheusError(RuntimeError):
    """Prometheus could not be reached or refused a query."""


@dataclass
class Sample:
    labels: dict[str, str]
    value: float


class PrometheusClient:
    """Instant and range queries against Prometheus' HTTP API.

    Example::

        prom = PrometheusClient("http://127.0.0.1:9090")
        prom.scalar('sum(redline_client_requests_in_flight)')
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: dict) -> dict:
        try:
            resp = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise PrometheusError(f"Prometheus at {self.url} is unreachable: {exc}") from exc
        except ValueError as exc:  # httpx refuses a URL it cannot send to
            raise PrometheusError(f"bad Prometheus URL {self.url!r}: {exc}") from None
        try:
            body = resp.json()
        except ValueError:
            raise PrometheusError(
                f"{self.url} answered {resp.status_code} with non-JSON: is it Prometheus?"
            ) from None
        if not isinstance(body, dict) or body.get("status") not in ("success", "error"):
            raise PrometheusError(self._not_prometheus(path, "no status field"))
        if body["status"] != "success":
            raise PrometheusError(
                f"query {params.get('query')!r} failed: {body.get('errorType')}: "
                f"{body.get('error')}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise PrometheusError(self._not_prometheus(path, "no data object"))
        return data

    def _not_prometheus(self, path: str, what: str) -> str:
        return (f"{self.url}{path} did not answer like the Prometheus HTTP API ({what}); "
                "is the URL a Prometheus server?")

    def _result(self, data: dict, path: str) -> list:
        result = data.get("result")
        if not isinstance(result, list):
            raise PrometheusError(self._not_prometheus(path, "no result list"))
        return result

    def query(self, expr: str, time: float | None = None) -> list[Sample]:
        """Instant vector query; native-histogram results are skipped (use quantiles)."""
        params = {"query": expr}
        if time is not None:
            params["time"] = f"{time:.3f}"
        path = "/api/v1/query"
        data = self._get(path, params)
        try:
            if data.get("resultType") == "scalar":
                return [Sample({}, float(data["result"][1]))]
            result = self._result(data, path)
            if not all(isinstance(r, dict) and isinstance(r.get("metric"), dict)
                       and ("value" in r or "histogram" in r) for r in result):
                raise TypeError("not a vector")
            return [Sample(dict(r["metric"]), float(r["value"][1]))
                    for r in result if "value" in r]
        except (KeyError, IndexError, TypeError, ValueError):
            raise PrometheusError(self._not_prometheus(path, "malformed samples")) from None

    def scalar(self, expr: str, time: float | None = None) -> float | None:
        """The single value of a query, ``None`` when it returns nothing or NaN."""
        samples = self.query(expr, time)
        if not samples:
            return None
        value = samples[0].value
        return None if math.isnan(value) else value

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        path = "/api/v1/query_range"
        data = self._get(path, {
            "query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"})
        result = self._result(data, path)
        for r in result:
            if not (isinstance(r, dict) and isinstance(r.get("values", []), list)
                    and all(isinstance(v, list) and len(v) == 2 for v in r.get("values", []))):
                raise PrometheusError(self._not_prometheus(path, "malformed series"))
        return result

    def alerts(self) -> list[dict]:
        alerts = self._get("/api/v1/alerts", {}).get("alerts")
        if not isinstance(alerts, list):
            raise PrometheusError(self._not_prometheus("/api/v1/alerts", "no alerts list"))
        return alerts
