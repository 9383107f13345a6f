"""Everything ``redline rules`` writes, as a mapping of relative path to text.

Layout (relative to the directory holding ``redline.yaml``)::

    alerts/<target>.rules.yml        recording + alerting rules (Prometheus loads *.rules.yml)
    alerts/<target>.long.rules.yml   the same over long windows (error budget, absent)
    alerts/tests/<target>*.test.yml  promtool unit tests of each rule file
    alerts/tests/<target>.server-<address>.test.yml  the same rules against series reported
                                     under each further server_address (compose: ``sim``)
    alerts/runbooks/<Alert>.md       one runbook per alert (runbook_url points here)
    alerts/alertmanager.yml          Alertmanager for the native stack
    compose/alertmanager.yml         the same for docker compose (container addresses)
"""

from __future__ import annotations

import re

from redline.config import Config
from redline_operator.alerts.alertmanager import alertmanager_config
from redline_operator.alerts.promtests import address_tests, target_tests
from redline_operator.alerts.rules import target_rule_files
from redline_operator.alerts.runbooks import runbooks
from redline_operator.alerts.writer import dump_yaml, header

__all__ = ["generate"]


def generate(cfg: Config, source: str = "redline.yaml", alerts_dir: str = "alerts",
             compose_file: str | None = "compose/alertmanager.yml") -> dict[str, str]:
    """All generated files for ``cfg``; ``source`` is named in their header."""
    a = alerts_dir.rstrip("/")
    files = {}
    for target in cfg.targets:
        for suffix, content in target_rule_files(cfg, target).items():
            rule_file = f"{target.name}.{suffix}"
            test_file = rule_file.replace("rules.yml", "test.yml")
            files[f"{a}/{rule_file}"] = dump_yaml(content, source)
            files[f"{a}/tests/{test_file}"] = dump_yaml(
                target_tests(cfg, target, f"../{rule_file}", long=suffix != "rules.yml"),
                source)
            for address in target.match.server_addresses[1:]:
                slug = re.sub(r"[^A-Za-z0-9_.-]", "_", address)
                variant = test_file.replace(".test.yml", f".server-{slug}.test.yml", 1) \
                    if suffix == "rules.yml" else test_file.replace(
                        ".long.test.yml", f".server-{slug}.long.test.yml")
                files[f"{a}/tests/{variant}"] = dump_yaml(address_tests(
                    cfg, target, f"../{rule_file}", address, long=suffix != "rules.yml"),
                    source)
    for name, text in runbooks().items():
        files[f"{a}/runbooks/{name}.md"] = header(source, "<!--") + "\n" + text
    files[f"{a}/alertmanager.yml"] = dump_yaml(alertmanager_config(cfg, "native"), source)
    if compose_file:
        files[compose_file] = dump_yaml(alertmanager_config(cfg, "compose"), source)
    return files
