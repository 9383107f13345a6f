"""Limiters per target, and which one a model call goes through.

A call is described by its GenAI attributes (``server.address``, ``gen_ai.request.model``,
...). It goes through the limiter of the first target whose ``match`` fits them: every
field of :class:`redline.config.Match` that is set must equal the call's value (``service``
is compared with this process's ``service.name``). Lookups are cached per distinct
attribute tuple, so the hot path costs one dict lookup.

Example:
    >>> from redline.config import Match
    >>> reg = LimiterRegistry()
    >>> reg.add(Limiter("local", model_cap=4, meter_provider=False),
    ...         Match(server_address="localhost"))
    >>> reg.for_attrs({"server.address": "localhost"}).name
    'local'
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from redline.limiter.core import Limiter
from redline.semconv import Attr

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

    from redline.config import Config, Match

__all__ = ["LimiterRegistry", "service_name_from_env"]

_CACHE_MAX = 4096  # distinct (address, port, model, provider) tuples remembered


def service_name_from_env() -> str | None:
    """``service.name`` as the OTel SDK would read it: ``OTEL_SERVICE_NAME``, else
    ``service.name=`` in ``OTEL_RESOURCE_ATTRIBUTES``."""
    name = os.environ.get("OTEL_SERVICE_NAME")
    if name:
        return name
    for item in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, _, value = item.partition("=")
        if key.strip() == "service.name" and value.strip():
            return value.strip()
    return None


class LimiterRegistry:
    """An ordered set of ``(match, limiter)``; the first match wins.

    Args:
        service_name: this process's ``service.name`` for ``match.service``; default from
            the OTel environment variables.
    """

    def __init__(self, service_name: str | None = None) -> None:
        self.service_name = service_name if service_name is not None else service_name_from_env()
        self._entries: list[tuple[Match | None, Limiter]] = []
        self._cache: dict[tuple, Limiter | None] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config, *, limiters: Mapping[str, Limiter] | None = None,
                    meter_provider: MeterProvider | None = None,
                    service_name: str | None = None) -> LimiterRegistry:
        """One limiter per target with ``limiter.enabled``; ``limiters`` (by target name)
        replace the ones built from the file and may enable a target the file leaves off."""
        reg = cls(service_name)
        given = dict(limiters or {})
        for target in config.targets:
            limiter = given.pop(target.name, None)
            if limiter is None and target.limiter.enabled:
                limiter = Limiter.from_target(target, meter_provider=meter_provider)
            if limiter is not None:
                reg.add(limiter, target.match)
        for limiter in given.values():
            reg.add(limiter)
        return reg

    def add(self, limiter: Limiter, match: Match | None = None) -> None:
        """Route calls fitting ``match`` (default: every call) through ``limiter``."""
        with self._lock:
            self._entries.append((match, limiter))  # None: every call
            self._cache = {}

    def _fits(self, match: Match | None, attrs: Mapping[str, object]) -> bool:
        if match is None:
            return True
        addresses = match.server_addresses
        if addresses and attrs.get(Attr.SERVER_ADDRESS) not in addresses:
            return False
        if match.model is not None and attrs.get(Attr.REQUEST_MODEL) != match.model:
            return False
        return match.service is None or match.service == self.service_name

    def for_attrs(self, attrs: Mapping[str, object]) -> Limiter | None:
        """The limiter a call with these GenAI attributes goes through, or ``None``."""
        key = (attrs.get(Attr.SERVER_ADDRESS), attrs.get(Attr.SERVER_PORT),
               attrs.get(Attr.REQUEST_MODEL), attrs.get(Attr.PROVIDER))
        try:
            return self._cache[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable attribute value: match without caching
            return self._lookup(attrs)
        found = self._lookup(attrs)
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache = {}
            self._cache[key] = found
        return found

    def _lookup(self, attrs: Mapping[str, object]) -> Limiter | None:
        for match, limiter in self._entries:
            if self._fits(match, attrs):
                return limiter
        return None

    def get(self, name: str) -> Limiter:
        """The limiter named ``name``.

        Raises:
            KeyError: no such limiter; the message lists the known names.
        """
        for _, limiter in self._entries:
            if limiter.name == name:
                return limiter
        raise KeyError(f"no limiter named {name!r}; known: {[lim.name for lim in self]}")

    def __iter__(self) -> Iterator[Limiter]:
        return iter([limiter for _, limiter in self._entries])

    def __len__(self) -> int:
        return len(self._entries)
