"""A model call's attribute sets, built once per call shape and shared by every call.

Every call of the same shape (provider, model, server, port, operation) records the same
attributes; what varies at its end is a handful of bounded values (the attempt's cause, the
response model, ``error.type``, the streaming flag, the token type). Building those dicts and
the per-process tallies' keys on every call cost more than the rest of redline's own work;
:func:`attr_set` builds each once and hands out the same objects, which are never mutated.

The cache is bounded: past :data:`MAX_SHAPES` shapes (or :data:`MAX_VARIANTS` variants of
one shape) the sets are built per call as before, so an app that sends unbounded model
strings costs the old price and never grows memory. Models and servers are folded into
``_OTHER`` past their limits (:mod:`redline._api.cardinality`) before they are cached, and
:func:`redline._api.cardinality.reset_limits` empties the cache with the limits.

Example:
    >>> shape = attr_set("openai", "gpt-4o", "api.openai.com", 443, "chat")
    >>> attrs, key = shape.variant((("redline.attempt.cause", "ok"),))
"""

from __future__ import annotations

import threading
from types import MappingProxyType
from typing import Any

from redline._api import cardinality
from redline._api.cardinality import fold_model, fold_server
from redline.semconv import Attr

__all__ = ["AttrSet", "Ending", "attr_set", "MAX_SHAPES", "MAX_VARIANTS"]

MAX_SHAPES = 1024
MAX_VARIANTS = 256

_shapes: dict[tuple, AttrSet] = {}
_lock = threading.Lock()


class AttrSet:
    """The attributes of one call shape and their variants (read-only, shared).

    Attributes:
        attrs: the instruments' attributes (models and servers folded).
        route: the real, unfolded values the limiter routes on.
        attrs_view, route_view: read-only views of both, for callers outside redline.
        key: ``frozenset(attrs.items())``, the tallies' key for ``attrs``.
    """

    __slots__ = ("attrs", "route", "key", "attrs_view", "route_view", "_variants", "_endings")

    def __init__(self, attrs: dict[str, Any], route: dict[str, Any]) -> None:
        self.attrs, self.route = attrs, route
        # what a call exposes (ModelCall.attrs / .route): shared, so not writable
        self.attrs_view, self.route_view = MappingProxyType(attrs), MappingProxyType(route)
        self.key = frozenset(attrs.items())
        self._variants: dict[tuple, tuple[dict[str, Any], frozenset]] = {}
        self._endings: dict[tuple, Ending] = {}

    def ending(self, response_model: str | None, error: str | None,
               streaming: bool) -> Ending:
        """What a call of this shape records at its end, for these values (one lookup)."""
        key = (response_model, error, streaming)
        found = self._endings.get(key)
        if found is None:
            found = Ending(self, response_model, error, streaming)
            if len(self._endings) < MAX_VARIANTS:
                self._endings[key] = found
        return found

    def variant(self, extra: tuple[tuple[str, Any], ...]) -> tuple[dict[str, Any], frozenset]:
        """``attrs`` plus the ``(name, value)`` pairs of ``extra`` whose value is not
        ``None``, and its tally key."""
        found = self._variants.get(extra)
        if found is None:
            attrs = dict(self.attrs)
            for name, value in extra:
                if value is not None:
                    attrs[name] = value
            found = (attrs, frozenset(attrs.items()))
            if len(self._variants) < MAX_VARIANTS:
                self._variants[extra] = found
        return found


class Ending:
    """The attribute sets of a call's end: ``requests_key`` (the requests tally's key),
    ``duration`` (the operation duration's attributes) and ``tokens[kind]`` (the token
    usage's, for ``input`` and ``output``)."""

    __slots__ = ("requests_key", "duration", "tokens")

    def __init__(self, shape: AttrSet, response_model: str | None, error: str | None,
                 streaming: bool) -> None:
        rm, err = (Attr.RESPONSE_MODEL, response_model), (Attr.ERROR_TYPE, error)
        self.requests_key = shape.variant((rm, err))[1]
        self.duration = shape.variant((rm, err, (Attr.STREAMING, streaming)))[0]
        self.tokens = {kind: shape.variant((rm, (Attr.TOKEN_TYPE, kind)))[0]
                       for kind in ("input", "output")}


def _build(provider: str, model: Any, address: Any, port: Any, operation: str,
           component: str) -> AttrSet:
    attrs: dict[str, Any] = {Attr.OPERATION: operation, Attr.PROVIDER: provider}
    try:
        folded = fold_model(None if model is None else str(model))
        if folded is not None:
            attrs[Attr.REQUEST_MODEL] = folded
        server = fold_server(None if address is None else str(address))
        if server is not None:
            attrs[Attr.SERVER_ADDRESS] = server
            if port is not None and server == str(address):  # none on a folded server
                attrs[Attr.SERVER_PORT] = int(port)
    except Exception as exc:  # a strange model object must not break the call
        from redline._api.guard import report

        report(component, exc)
    route: dict[str, Any] = {Attr.OPERATION: operation, Attr.PROVIDER: provider}
    if model is not None:
        route[Attr.REQUEST_MODEL] = str(model)
    if address is not None:
        route[Attr.SERVER_ADDRESS] = str(address)
        if port is not None:
            route[Attr.SERVER_PORT] = port
    return AttrSet(attrs, route)


def attr_set(provider: str, model: Any, address: Any, port: Any, operation: str,
             component: str = "model_call") -> AttrSet:
    """The shared :class:`AttrSet` of a call shape (built on first use)."""
    key = (provider, model, address, port, operation)
    try:
        found = _shapes.get(key)
    except TypeError:  # an unhashable model object: built per call
        return _build(provider, model, address, port, operation, component)
    if found is not None:
        return found
    found = _build(provider, model, address, port, operation, component)
    with _lock:
        if len(_shapes) < MAX_SHAPES:
            found = _shapes.setdefault(key, found)
    return found


def _clear() -> None:
    with _lock:
        _shapes.clear()


cardinality.on_reset(_clear)
