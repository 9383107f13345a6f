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
import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from redline.config import Config, PagerDutyReceiver, SlackReceiver, WebhookReceiver
from redline_operator.alerts.rules import CONCURRENCY, ERROR_BUDGET, PREDICTED

__all__ = ["alertmanager_config", "compose_url", "secret_env_names", "render_secrets",
           "SecretsError",
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


class SecretsError(Exception):
    """The secrets directory or a secret file is not safe to write to."""


def _safe_dir(out: Path) -> None:
    """Create ``out`` (0700) or check that an existing one is a real directory of ours
    that nobody else can read, write or enter."""
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.lstat(out)
    except OSError as exc:
        raise SecretsError(f"cannot create {out}: {exc.strerror}") from None
    import stat

    if not stat.S_ISDIR(st.st_mode):
        raise SecretsError(f"{out} is not a directory (a symlink?); refusing to write "
                           "secrets through it")
    if st.st_uid != os.getuid():
        raise SecretsError(f"{out} belongs to uid {st.st_uid}, not to you; refusing")
    if st.st_mode & 0o077:
        try:  # ours: tighten it, as a fresh directory would be
            os.chmod(out, 0o700)
        except OSError as exc:
            raise SecretsError(f"{out} is accessible to others (mode "
                               f"{st.st_mode & 0o777:o}) and cannot be tightened: "
                               f"{exc.strerror}") from None


def _write_secret(path: Path, value: str) -> None:
    """Write through a fresh temporary file: O_EXCL|O_NOFOLLOW, mode 0600 from creation,
    so a planted file or symlink is never written through and no reader sees the secret
    with wider permissions."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as exc:
        raise SecretsError(f"cannot create {tmp}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value)
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise SecretsError(f"{path} exists and is not a regular file; refusing")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def render_secrets(cfg: Config, directory: str | os.PathLike[str] | None = None,
                   environ: dict[str, str] | None = None) -> list[Path]:
    """Write each ``*_env`` secret to ``<secrets_dir>/<NAME>`` (mode 0600, atomically).

    Raises:
        KeyError: a variable is not set; nothing is written then.
        SecretsError: the directory or a file in it is unsafe (symlink, someone else's,
            not a directory); nothing more is written.
    """
    env = os.environ if environ is None else environ
    names = secret_env_names(cfg)
    missing = [n for n in names if not env.get(n)]
    if missing:
        raise KeyError(", ".join(missing))
    out = Path(directory or cfg.pager.secrets_dir)
    _safe_dir(out)
    written = []
    for name in names:
        path = out / name
        _write_secret(path, env[name])
        written.append(path)
    return written
