"""Alertmanager configuration from ``redline.yaml``'s ``pager`` section.

Two variants differ only in addresses: ``native`` (``redline stack up``; webhooks as
written, secrets under ``pager.secrets_dir`` relative to Alertmanager's working
directory, the repository root) and ``compose`` (webhooks on a loopback host are reached
through ``host.docker.internal``, secrets are docker compose secrets under
``/run/secrets``).

Secrets never enter the generated file. A ``*_file`` setting is passed through as
Alertmanager's own ``routing_key_file``/``api_url_file``. Alertmanager cannot read
environment variables, so a ``*_env`` setting becomes a file named after the variable in
the secrets directory: ``redline rules --render-secrets`` writes it (mode 0600) from the
environment at deploy time, and compose's ``secrets: {NAME: {environment: NAME}}`` does
the same inside containers.

Example::

    text = dump_yaml(alertmanager_config(cfg, variant="native"))
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from redline.config import Config, PagerDutyReceiver, SlackReceiver, WebhookReceiver
from redline_operator.alerts.rules import CONCURRENCY, ERROR_BUDGET, PREDICTED

__all__ = ["alertmanager_config", "compose_url", "secret_env_names", "render_secrets",
           "COMPOSE_SECRETS_DIR"]

COMPOSE_SECRETS_DIR = "/run/secrets"
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def compose_url(receiver: WebhookReceiver) -> str:
    """The webhook's address from inside a container."""
    if receiver.compose_url:
        return receiver.compose_url
    parts = urlsplit(receiver.url)
    if parts.hostname not in _LOOPBACK:
        return receiver.url
    netloc = "host.docker.internal" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _secret_path(env: str | None, file: str | None, secrets_dir: str) -> str:
    return file if file else f"{secrets_dir.rstrip('/')}/{env}"


def _receiver(r, variant: str, secrets_dir: str) -> dict:
    if isinstance(r, WebhookReceiver):
        url = r.url if variant == "native" else compose_url(r)
        return {"name": r.name,
                "webhook_configs": [{"url": url, "send_resolved": True}]}
    if isinstance(r, PagerDutyReceiver):
        return {"name": r.name, "pagerduty_configs": [{
            "routing_key_file": _secret_path(r.routing_key_env, r.routing_key_file,
                                             secrets_dir),
            "send_resolved": True,
            "description": '{{ template "pagerduty.default.description" . }}',
            "details": {"summary": "{{ .CommonAnnotations.summary }}",
                        "runbook_url": "{{ .CommonAnnotations.runbook_url }}"},
        }]}
    assert isinstance(r, SlackReceiver)
    return {"name": r.name, "slack_configs": [{
        "api_url_file": _secret_path(r.api_url_env, r.api_url_file, secrets_dir),
        "channel": r.channel,
        "send_resolved": True,
        "title": "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} "
                 "{{ .CommonLabels.target }} ({{ .CommonLabels.severity }})",
        "text": "{{ range .Alerts }}{{ .Annotations.description }}\n"
                "{{ .Annotations.runbook_url }}\n{{ end }}",
    }]}


def alertmanager_config(cfg: Config, variant: str = "native") -> dict:
    """The Alertmanager config; ``variant`` is ``native`` or ``compose``."""
    if variant not in ("native", "compose"):
        raise ValueError(f"variant must be 'native' or 'compose', not {variant!r}")
    p = cfg.pager
    secrets_dir = p.secrets_dir if variant == "native" else COMPOSE_SECRETS_DIR
    return {
        "route": {
            "receiver": p.warn_receiver,
            "group_by": ["alertname", "target", "severity"],
            "group_wait": p.group_wait,
            "group_interval": p.group_interval,
            "repeat_interval": p.repeat_interval,
            "routes": [
                {"matchers": ['severity="page"'], "receiver": p.page_receiver},
                {"matchers": ['severity="warn"'], "receiver": p.warn_receiver},
            ],
        },
        # A page makes the same target's warn about the same thing redundant.
        "inhibit_rules": [{
            "source_matchers": ['severity="page"', f'alertname="{CONCURRENCY}"'],
            "target_matchers": ['severity="warn"', f'alertname=~"{CONCURRENCY}|{PREDICTED}"'],
            "equal": ["target"],
        }, {
            "source_matchers": ['severity="page"', f'alertname="{ERROR_BUDGET}"'],
            "target_matchers": ['severity="warn"', f'alertname="{ERROR_BUDGET}"'],
            "equal": ["target"],
        }],
        "receivers": [_receiver(r, variant, secrets_dir) for r in p.receivers],
    }


def secret_env_names(cfg: Config) -> list[str]:
    """Environment variables that receivers read secrets from."""
    names = []
    for r in cfg.pager.receivers:
        env = getattr(r, "routing_key_env", None) or getattr(r, "api_url_env", None)
        if env and not (getattr(r, "routing_key_file", None) or getattr(r, "api_url_file", None)):
            names.append(env)
    return names


def render_secrets(cfg: Config, directory: str | os.PathLike[str] | None = None,
                   environ: dict[str, str] | None = None) -> list[Path]:
    """Write each ``*_env`` secret to ``<secrets_dir>/<NAME>`` (mode 0600, atomically).

    Raises:
        KeyError: a variable is not set; nothing is written then.
    """
    env = os.environ if environ is None else environ
    names = secret_env_names(cfg)
    missing = [n for n in names if not env.get(n)]
    if missing:
        raise KeyError(", ".join(missing))
    out = Path(directory or cfg.pager.secrets_dir)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    written = []
    for name in names:
        path = out / name
        tmp = path.with_name(f".{name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(env[name])
        os.replace(tmp, path)
        written.append(path)
    return written
