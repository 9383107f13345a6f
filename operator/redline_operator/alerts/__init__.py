"""Alert rules, promtool tests, runbooks and Alertmanager config from ``redline.yaml``.

Example::

    from redline_operator.alerts import generate, write_files
    from redline.config import load_config
    files = generate(load_config("redline.yaml"))
    write_files(Path("."), files)
"""

from redline_operator.alerts.alertmanager import alertmanager_config, render_secrets
from redline_operator.alerts.generate import generate
from redline_operator.alerts.rules import ALERT_NAMES, alert_specs, target_rule_files
from redline_operator.alerts.writer import diff_files, stale_files, write_files

__all__ = ["ALERT_NAMES", "alert_specs", "alertmanager_config", "diff_files", "generate",
           "render_secrets", "stale_files", "target_rule_files", "write_files"]
