"""The config files a stack runs with, rewritten for its ports when they are moved.

On the default ports the committed files are used as they are (``prometheus/prometheus.yml``,
``alerts/alertmanager.yml``), so ``redline rules --reload`` and a hand edit take effect on
``/-/reload``. When any port is moved (``REDLINE_*_PORT``, or a second stack on free ports
as the tests start), each file is rendered into the stack's state directory with every
``127.0.0.1:<default port>`` address rewritten to the moved port — Prometheus' scrape and
alerting targets, the pager's webhook URL — and every relative file path made absolute
(both servers resolve relative paths against the config file's own folder, which the
copy does not share). The Collector needs no copy: it reads its endpoints from the
environment the stack sets for it.

Example::

    path = render(root / "prometheus" / "prometheus.yml", state / "prometheus.yml", ports)
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any

from redline_operator.stack.ports import HOST, Ports

__all__ = ["port_map", "rewrite_addresses", "render", "prometheus_config",
           "alertmanager_config", "render_all"]

_ADDRESS = re.compile(rf"(?<![\d.]){re.escape(HOST)}:(\d+)(?!\d)")
# Keys whose values are paths (or lists of globs) resolved against the config's folder.
_PATH_LIST_KEYS = {"rule_files", "scrape_config_files", "files", "templates"}


def port_map(ports: Ports) -> dict[int, int]:
    """Default port -> moved port, for the ports that differ from the defaults."""
    default = Ports()
    return {getattr(default, f.name): getattr(ports, f.name) for f in fields(Ports)
            if getattr(ports, f.name) != getattr(default, f.name)}


def rewrite_addresses(text: str, mapping: dict[int, int]) -> str:
    """``127.0.0.1:9093`` -> ``127.0.0.1:<moved>`` for every port in ``mapping``."""
    def sub(m: re.Match[str]) -> str:
        port = int(m.group(1))
        return f"{HOST}:{mapping.get(port, port)}"
    return _ADDRESS.sub(sub, text)


def _absolute(value: str, base: Path) -> str:
    return value if Path(value).is_absolute() else os.path.normpath(base / value)


def _walk(node: Any, fix: Callable[[str], str], base: Path, key: str = "") -> Any:
    if isinstance(node, dict):
        for k in list(node):
            node[k] = _walk(node[k], fix, base, str(k))
        return node
    if isinstance(node, list):
        for i, item in enumerate(node):
            if key in _PATH_LIST_KEYS and isinstance(item, str):
                new = _absolute(item, base)
                node[i] = item if new == item else type(item)(new)
            else:
                node[i] = _walk(item, fix, base, key)
        return node
    if isinstance(node, str):
        new = _absolute(node, base) if key.endswith("_file") else fix(node)
        # keep ruamel's scalar type (its quoting style) where the value changes
        return node if new == node else type(node)(new)
    return node


def render(source: Path, dest: Path, ports: Ports, *, text: str | None = None) -> Path:
    """Write ``source`` (or ``text`` read from it) to ``dest`` for ``ports``; returns dest.

    Comments and layout are kept (ruamel round trip); only addresses and relative paths
    change. Written to a temporary file and renamed, so a reload never reads half a file.
    """
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    doc = yaml.load(source.read_text(encoding="utf-8") if text is None else text)
    mapping = port_map(ports)
    _walk(doc, lambda s: rewrite_addresses(s, mapping), source.parent.resolve())
    buf = io.StringIO()
    buf.write(f"# rendered by redline from {source} for moved ports — do not edit\n")
    yaml.dump(doc, buf)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    tmp.replace(dest)
    return dest


def _moved(ports: Ports) -> bool:
    return bool(port_map(ports))


def prometheus_config(root: Path, state: Path, ports: Ports) -> Path:
    """The Prometheus config path a stack on ``ports`` runs with."""
    committed = root / "prometheus" / "prometheus.yml"
    return state / "prometheus.yml" if _moved(ports) else committed


def _alertmanager_source(root: Path) -> tuple[Path, str | None]:
    generated = root / "alerts" / "alertmanager.yml"
    if generated.is_file():
        return generated, None
    fallback = resources.files("redline_operator.stack").joinpath("alertmanager-fallback.yaml")
    return Path(str(fallback)), fallback.read_text(encoding="utf-8")


def alertmanager_config(root: Path, state: Path, ports: Ports) -> Path:
    """The Alertmanager config path a stack on ``ports`` runs with.

    ``alerts/alertmanager.yml`` (written by the rules generator) when it exists, else the
    packaged fallback that routes everything to the local pager; a rendered copy in
    ``state`` when ports are moved.
    """
    source, _ = _alertmanager_source(root)
    return state / "alertmanager.yml" if _moved(ports) else source


def render_all(root: Path, state: Path, ports: Ports) -> list[Path]:
    """Render the copies a stack on moved ports needs (none on the default ports)."""
    if not _moved(ports):
        return []
    source, text = _alertmanager_source(root)
    return [
        render(root / "prometheus" / "prometheus.yml", prometheus_config(root, state, ports),
               ports),
        render(source, alertmanager_config(root, state, ports), ports, text=text),
    ]
