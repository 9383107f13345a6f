"""All-or-nothing patching: resolve every target first, wrap them all, or none.

Example:
    >>> patches = Patches([("mcp.client.session", "ClientSession.call_tool", wrapper)])
    >>> patches.apply()    # raises (and wraps nothing) if any target is missing
    >>> patches.remove()
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from typing import Any

from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

__all__ = ["Patches"]


def _resolve(module: str, path: str) -> tuple[Any, str]:
    owner: Any = importlib.import_module(module)
    *parents, attr = path.split(".")
    for name in parents:
        owner = getattr(owner, name)
    if not callable(getattr(owner, attr, None)):
        raise AttributeError(f"{module}.{path} is not a callable this version has")
    return owner, attr


class Patches:
    """A set of ``wrapt`` wrappers applied and removed together."""

    def __init__(self, targets: list[tuple[str, str, Callable[..., Any]]],
                 optional: list[tuple[str, str, Callable[..., Any]]] = ()) -> None:
        self.targets, self.optional = targets, list(optional)
        self._applied: list[tuple[Any, str]] = []

    def apply(self) -> None:
        """Wrap every target (and each optional one this version has), or raise and wrap none."""
        resolved = [(_resolve(module, path), module, path, wrapper)
                    for module, path, wrapper in self.targets]  # raises before any wrap
        for module, path, wrapper in self.optional:
            with contextlib.suppress(ImportError, AttributeError):
                resolved.append((_resolve(module, path), module, path, wrapper))
        try:
            for (owner, attr), module, path, wrapper in resolved:
                wrap_function_wrapper(module, path, wrapper)
                self._applied.append((owner, attr))
        except Exception:
            self.remove()
            raise

    def remove(self) -> None:
        while self._applied:
            owner, attr = self._applied.pop()
            unwrap(owner, attr)
