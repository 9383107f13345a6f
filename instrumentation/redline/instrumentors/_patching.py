"""All-or-nothing, reversible method patching for the SDK instrumentors.

An instrumentor lists what it wants to wrap as :class:`Target` values (a class found by
import path, a method name, a wrapper). :class:`PatchSet` resolves every target first and
only then wraps; if any wrap fails it unwraps what it already did, so an SDK is never left
half-patched. :meth:`PatchSet.restore` puts back exactly the attributes it replaced (an
inherited method it shadowed is deleted again, not copied down). A target that is already
wrapped by redline is refused, so a second ``instrument()`` can never count a call twice.

Example:
    >>> patches = PatchSet("openai")
    >>> patches.apply([Target(Completions, "create", wrapper)])   # True: every one applied
    >>> patches.restore()                                          # the originals again
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from wrapt import FunctionWrapper

__all__ = ["Target", "PatchSet", "find_class", "is_redline_wrapper"]

_log = logging.getLogger("redline")
_MARK = "_self_redline_patch"


class _RedlineWrapper(FunctionWrapper):
    """A ``wrapt.FunctionWrapper`` that says it is redline's (see :func:`is_redline_wrapper`)."""

    _self_redline_patch = True


def is_redline_wrapper(value: Any) -> bool:
    """Whether ``value`` (a class attribute) is a wrapper redline installed."""
    return bool(getattr(value, _MARK, False))


def find_class(*paths: str) -> type | None:
    """The first ``"package.module:Class"`` of ``paths`` that imports, else ``None``.

    SDK versions move classes between modules; each instrumentor lists the places a class
    has lived and takes the first that exists (feature detection, not version checks).
    """
    for path in paths:
        module, _, name = path.partition(":")
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if isinstance(found, type):
            return found
    return None


@dataclass(frozen=True)
class Target:
    """One method to wrap: ``owner.name`` gets ``wrapper(wrapped, instance, args, kwargs)``."""

    owner: type
    name: str
    wrapper: Callable[..., Any]


class PatchSet:
    """The wrappers one instrumentor applied; applied together, restored together.

    Args:
        label: the SDK's name, for log lines.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        # (owner, name, what vars(owner) held before or _ABSENT, our wrapper)
        self._applied: list[tuple[type, str, Any, Any]] = []

    @property
    def active(self) -> bool:
        """Whether wrappers are in place."""
        return bool(self._applied)

    def apply(self, targets: Iterable[Target]) -> bool:
        """Wrap every target, or none (returns ``False`` and leaves the SDK untouched)."""
        targets = list(targets)
        if self._applied:
            return True  # already applied: never wrap twice
        for t in targets:
            current = getattr(t.owner, t.name, None)
            if not callable(current):
                _log.info("redline: %s: %s.%s not found; not instrumenting %s", self.label,
                          t.owner.__qualname__, t.name, self.label)
                return False
            if is_redline_wrapper(vars(t.owner).get(t.name)):
                _log.info("redline: %s.%s is already instrumented by redline",
                          t.owner.__qualname__, t.name)
                return False
        try:
            for t in targets:
                before = vars(t.owner).get(t.name, _ABSENT)
                original = getattr(t.owner, t.name) if before is _ABSENT else before
                wrapper = _RedlineWrapper(original, t.wrapper)
                setattr(t.owner, t.name, wrapper)
                self._applied.append((t.owner, t.name, before, wrapper))
        except Exception:
            _log.warning("redline: %s: wrapping failed; leaving %s as it was", self.label,
                         self.label, exc_info=True)
            self.restore()
            return False
        return True

    def restore(self) -> None:
        """Put back every attribute this set replaced (most recent first)."""
        while self._applied:
            owner, name, before, wrapper = self._applied.pop()
            try:
                if vars(owner).get(name) is not wrapper:
                    # someone wrapped on top of us: leave their wrapper, bypass ours
                    _log.info("redline: %s.%s was re-wrapped by someone else; "
                              "restoring under it is not possible", owner.__qualname__, name)
                    continue
                if before is _ABSENT:
                    delattr(owner, name)
                else:
                    setattr(owner, name, before)
            except Exception:
                _log.warning("redline: could not restore %s.%s", owner.__qualname__, name,
                             exc_info=True)


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()
