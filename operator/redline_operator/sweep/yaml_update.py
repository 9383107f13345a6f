"""Write a measured knee into ``redline.yaml``, keeping everything else as the user wrote it.

The file is edited round-trip with ruamel.yaml, so comments, key order, quoting and the
other settings survive; only ``targets[<name>].saturation_concurrency`` changes. The new
text is validated against the :mod:`redline.config` schema before it replaces the file
(atomically), so a sweep can never leave behind a config the rules generator rejects.

Example::

    old = write_saturation("redline.yaml", "sim", 16)
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from redline.config import Config, ConfigError
from redline_operator.sweep.report import atomic_write_text

__all__ = ["write_saturation", "update_saturation_text"]


_INDENTS = ((2, 4, 2), (2, 2, 0), (4, 4, 2), (4, 4, 0), (2, 3, 1), (4, 6, 4), (4, 4, 4))


def _yaml(indent: tuple[int, int, int]) -> YAML:
    y = YAML()  # round-trip
    y.preserve_quotes = True
    y.width = 4096  # never re-wrap the user's long lines
    y.indent(mapping=indent[0], sequence=indent[1], offset=indent[2])
    return y


def _dump(y: YAML, doc: object) -> str:
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()


def _house_style(text: str) -> YAML:
    """The indentation settings that reproduce ``text`` most faithfully.

    ruamel cannot read a file's mapping and sequence indents back, so try the common
    styles on the unmodified document and keep the one whose dump differs in fewest lines.
    """
    lines = text.splitlines()

    def changed(indent: tuple[int, int, int]) -> int:
        y = _yaml(indent)
        out = _dump(y, y.load(text)).splitlines()
        return sum(a != b for a, b in zip(lines, out, strict=False)) + abs(len(lines) - len(out))

    return _yaml(min(_INDENTS, key=changed))


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(float(value), 3)


def update_saturation_text(text: str, target: str, value: float, *,
                           source: str = "redline.yaml",
                           key: str = "saturation_concurrency") -> tuple[str, float | None]:
    """Return ``text`` with ``targets[target].<key>`` set to ``value``.

    ``key`` is ``saturation_concurrency`` (model calls in flight at the knee) or
    ``saturation_sessions`` (concurrent agent sessions at the knee).

    Args:
        text: the YAML document.
        target: the target's ``name``.
        value: the knee concurrency (> 0).
        source: file name used in error messages.

    Returns:
        (new text, previous value or ``None``).

    Raises:
        ConfigError: the text is not YAML, has no such target, or would fail validation.
    """
    if key not in ("saturation_concurrency", "saturation_sessions"):
        raise ValueError(f"not a threshold key: {key!r}")
    if not value > 0:
        raise ConfigError(f"{source}: {key} must be > 0, got {value!r}")
    try:
        y = _house_style(text)
        doc = y.load(text)
    except YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    targets = doc.get("targets") if hasattr(doc, "get") else None
    if not isinstance(targets, list):
        raise ConfigError(f"{source}: key targets: expected a list of targets")
    names = [t.get("name") for t in targets if hasattr(t, "get")]
    entry = next((t for t in targets if hasattr(t, "get") and t.get("name") == target), None)
    if entry is None:
        raise ConfigError(f"{source}: no target named {target!r} under targets; known: "
                          f"{names}. Pass --target with one of them.")
    previous = entry.get(key)
    entry[key] = _number(value)
    new_text = _dump(y, doc)
    try:
        Config.model_validate(YAML(typ="safe").load(new_text))
    except ValidationError as exc:
        raise ConfigError(f"{source}: would be invalid after setting "
                          f"targets[{target}].{key}={value}: {exc}") from None
    return new_text, previous


def write_saturation(path: str | os.PathLike[str], target: str, value: float, *,
                     key: str = "saturation_concurrency") -> float | None:
    """Set ``targets[target].<key>`` in the file at ``path``, atomically.

    Returns:
        The previous value (``None`` if the key was missing).

    Raises:
        ConfigError: the file is missing or unreadable, or see :func:`update_saturation_text`.
    """
    path = Path(path)
    # A symlinked config is edited where it lives; replacing the link itself would leave
    # the real file unchanged and the link turned into a copy.
    real = Path(os.path.realpath(path))
    try:
        text = real.read_text(encoding="utf-8")
        mode = real.stat().st_mode & 0o7777
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    new_text, previous = update_saturation_text(text, target, value, source=str(path), key=key)
    try:
        atomic_write_text(real, new_text)
        os.chmod(real, mode)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write {real}: {exc.strerror}; the file is "
                          "unchanged") from None
    return previous
