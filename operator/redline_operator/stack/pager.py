"""The local pager: an Alertmanager webhook receiver that writes down every page.

Each webhook POST is appended as one JSON line to the pages file, with the time it
was received; GET returns everything received so far, so a test or a demo can assert
that a page arrived and how long it took. It stands in for PagerDuty or Opsgenie on
a laptop, and it is a real HTTP peer for Alertmanager, not a fake.

Run it as ``python -m redline_operator.stack.pager --port 9096 --out .cache/stack/pages.jsonl``
(``redline stack up`` does).

Endpoints:
    ``POST /alerts`` (any path): record an Alertmanager webhook payload (a JSON object
    with ``version``, ``status`` and an ``alerts`` list; anything else is 400).
    ``GET /alerts``: ``{"pages": [{"received_at": <unix s>, "path": ..., "payload": ...}]}``
    (the newest pages, at most ``MAX_FILE_BYTES`` of them).
    ``DELETE /alerts``: forget what was received; needs the header
    ``X-Redline-Pager-Token`` with the token the pager wrote next to its pages file
    (``<out>.token``, mode 0600), so only a local user who can read it may wipe.
    ``GET /-/ready``: 200 once listening.

Limits: a body must declare its ``Content-Length`` (at most ``MAX_BODY`` bytes; chunked or
negative lengths are refused, and only that many bytes are ever read); the pages file is
rotated to ``<out>.1`` when it would pass ``MAX_FILE_BYTES``. It listens on loopback only.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["PagerServer", "read_pages", "main", "is_webhook", "MAX_BODY", "MAX_FILE_BYTES",
           "TOKEN_HEADER"]

#: Alertmanager payloads are small (a few KiB per alert); anything bigger is not a webhook.
MAX_BODY = 1024 * 1024
#: The pages file is rotated to ``<out>.1`` before it grows past this.
MAX_FILE_BYTES = 16 * 1024 * 1024
TOKEN_HEADER = "X-Redline-Pager-Token"
_MAX_ALERTS = 1000


def read_pages(path: Path) -> list[dict[str, Any]]:
    """Every page recorded in ``path`` (a JSON-lines file), oldest first; lines that are
    not JSON (a torn write) are skipped."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return []
    pages = []
    for line in text.splitlines():
        if line.strip():
            try:
                pages.append(json.loads(line))
            except ValueError:
                continue
    return pages


def is_webhook(payload: Any) -> str | None:
    """Why ``payload`` is not an Alertmanager webhook (version 4), or None when it is."""
    if not isinstance(payload, dict):
        return "expected a JSON object"
    if payload.get("version") != "4":
        return "expected an Alertmanager webhook (\"version\": \"4\")"
    if payload.get("status") not in ("firing", "resolved"):
        return "expected \"status\": \"firing\" or \"resolved\""
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts or len(alerts) > _MAX_ALERTS:
        return f"expected an \"alerts\" list of 1 to {_MAX_ALERTS} alerts"
    if not all(isinstance(a, dict) and isinstance(a.get("labels"), dict) for a in alerts):
        return "every alert needs a \"labels\" object"
    return None


class PagerServer(ThreadingHTTPServer):
    """HTTP server that appends webhook payloads to ``out``.

    Example::

        server = PagerServer(("127.0.0.1", 9096), Path("pages.jsonl"))
        server.serve_forever()
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], out: Path,
                 max_file_bytes: int = MAX_FILE_BYTES) -> None:
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise OSError(f"the local pager listens on loopback only, not {address[0]}")
        self.out = out
        self.max_file_bytes = max_file_bytes
        self.lock = threading.Lock()
        out.parent.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_urlsafe(24)
        token_file = out.with_name(out.name + ".token")
        token_file.unlink(missing_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.token + "\n")
        super().__init__(address, _Handler)

    def record(self, path: str, payload: Any) -> None:
        line = json.dumps({"received_at": time.time(), "path": path[:200], "payload": payload})
        data = (line + "\n").encode("utf-8")
        with self.lock:
            try:
                size = self.out.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(data) > self.max_file_bytes:
                os.replace(self.out, self.out.with_name(self.out.name + ".1"))
            with self.out.open("ab") as f:
                f.write(data)

    def clear(self) -> None:
        with self.lock:
            self.out.write_text("", encoding="utf-8")
            self.out.with_name(self.out.name + ".1").unlink(missing_ok=True)


class _Handler(BaseHTTPRequestHandler):
    server: PagerServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        if self.headers.get("Transfer-Encoding"):
            self._reply(411, {"error": "chunked bodies are not accepted; send Content-Length"},
                        close=True)
            return
        raw = self.headers.get("Content-Length", "")
        if not raw.isdigit():
            self._reply(411 if not raw else 400,
                        {"error": "Content-Length must be a non-negative integer"}, close=True)
            return
        length = int(raw)
        if length > MAX_BODY:
            self._reply(413, {"error": f"body over {MAX_BODY} bytes"}, close=True)
            return
        body = self.rfile.read(length)
        try:
            payload = json.loads(body)
        except ValueError:
            self._reply(400, {"error": "body is not JSON; expected an Alertmanager webhook"})
            return
        why = is_webhook(payload)
        if why:
            self._reply(400, {"error": why})
            return
        self.server.record(self.path, payload)
        self._reply(200, {"status": "recorded"})

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/-/ready":
            self._reply(200, {"status": "ready"})
            return
        with self.server.lock:
            pages = read_pages(self.server.out)
        self._reply(200, {"pages": pages})

    def do_DELETE(self) -> None:  # noqa: N802
        given = self.headers.get(TOKEN_HEADER, "")
        if not secrets.compare_digest(given.encode(), self.server.token.encode()):
            self._reply(403, {"error": f"DELETE needs the {TOKEN_HEADER} header with the "
                                       f"token in {self.server.out}.token"})
            return
        self.server.clear()
        self._reply(200, {"status": "cleared"})

    def _reply(self, status: int, body: dict[str, Any], close: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:  # an unread body must not be parsed as the next request
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # One line per request on stderr, which the stack sends to pager.log.
        sys.stderr.write(f"{self.log_date_time_string()} {format % args}\n")


def main(argv: list[str] | None = None) -> int:
    """Run the pager until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m redline_operator.stack.pager")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9096)
    parser.add_argument("--out", type=Path, default=Path(".cache/stack/pages.jsonl"))
    args = parser.parse_args(argv)
    try:
        server = PagerServer((args.host, args.port), args.out)
    except (OSError, ValueError) as exc:
        print(f"pager: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1

    def _shutdown(signum: int, frame: object) -> None:
        # shutdown() blocks until serve_forever returns, so it must run elsewhere.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    print(
        f"pager: listening on http://{args.host}:{args.port}, writing {args.out}", file=sys.stderr
    )
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
