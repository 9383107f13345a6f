"""Grafana dashboards generated from ``redline.yaml``.

Example::

    from redline.config import load_config
    from redline_operator.dashboards import build_dashboards, write_dashboards

    write_dashboards(build_dashboards(load_config("redline.yaml")), "dashboards")

:mod:`.queries` holds the PromQL, :mod:`.layout` the panels and rows, :mod:`.builder`
the grafana-foundation-sdk glue and :mod:`.writer` the byte-stable, atomic output.
"""

from redline_operator.dashboards.builder import DATASOURCE_UID, GENERATED_NOTE
from redline_operator.dashboards.layout import build_all as build_dashboards
from redline_operator.dashboards.writer import check_dashboards, render, write_dashboards

__all__ = [
    "DATASOURCE_UID",
    "GENERATED_NOTE",
    "build_dashboards",
    "check_dashboards",
    "render",
    "write_dashboards",
]
