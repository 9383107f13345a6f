"""The local pager: an Alertmanager webhook receiver that writes down every page.

Each webhook POST is appended as one JSON line to the pages file, with the time it
was received; GET returns everything received so far, so a test or a demo can assert
that a page arrived and how long it took. It stands in for PagerDuty or Opsgenie on
a laptop, and it is a real HTTP peer for Alertmanager, not a fake.

Run it as ``python -m redline_operator.stack.pager --port 9096 --out .cache/stack/pages.jsonl``
(``redline stack up`` does).

Endpoints:
    ``POST /alerts`` (any path): record an Alertmanager webhook payload.
    ``GET /alerts``: ``{"pages": [{"received_at": <unix s>, "path": ..., "payload": ...}]}``.
    ``DELETE /alerts``: forget what was received (the file is truncated).
    ``GET /-/ready``: 200 once listening.
    ``GET /runbooks/<Alert>.md``: the generated runbook from ``--runbooks`` (default
    ``alerts/runbooks`` under the working directory, the repository root when the stack
    starts it), so the ``runbook_url`` of a local page resolves.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["PagerServer", "read_pages", "main"]

#: Alertmanager payloads are small; anything bigger is not a webhook.
_MAX_BODY = 4 * 1024 * 1024


def read_pages(path: Path) -> list[dict[str, Any]]:
    """Every page recorded in ``path`` (a JSON-lines file), oldest first."""
    if not path.is_file():
        return []
    pages = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            pages.append(json.loads(line))
    return pages


class PagerServer(ThreadingHTTPServer):
    """HTTP server that appends webhook payloads to ``out``.

    Example::

        server = PagerServer(("127.0.0.1", 9096), Path("pages.jsonl"))
        server.serve_forever()
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], out: Path,
                 runbooks: Path = Path("alerts/runbooks")) -> None:
        self.out = out
        self.runbooks = runbooks
        self.lock = threading.Lock()
        out.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(address, _Handler)

    def record(self, path: str, payload: Any) -> None:
        line = json.dumps({"received_at": time.time(), "path": path, "payload": payload})
        with self.lock, self.out.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    def clear(self) -> None:
        with self.lock:
            self.out.write_text("", encoding="utf-8")


class _Handler(BaseHTTPRequestHandler):
    server: PagerServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self._reply(413, {"error": f"body over {_MAX_BODY} bytes"})
            return
        body = self.rfile.read(length)
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            self._reply(400, {"error": "body is not JSON; expected an Alertmanager webhook"})
            return
        self.server.record(self.path, payload)
        self._reply(200, {"status": "recorded"})

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/-/ready":
            self._reply(200, {"status": "ready"})
            return
        if self.path.startswith("/runbooks/"):
            self._runbook(self.path.removeprefix("/runbooks/"))
            return
        with self.server.lock:
            pages = read_pages(self.server.out)
        self._reply(200, {"pages": pages})

    def _runbook(self, name: str) -> None:
        # one flat directory of generated files: a bare <Alert>.md name, nothing else
        path = self.server.runbooks / name
        if "/" in name or not name.endswith(".md") or not path.is_file():
            self._reply(404, {"error": f"no runbook {name!r} in {self.server.runbooks}"})
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "text/markdown; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_DELETE(self) -> None:  # noqa: N802
        self.server.clear()
        self._reply(200, {"status": "cleared"})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
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
    parser.add_argument("--runbooks", type=Path, default=Path("alerts/runbooks"),
                        help="directory of the generated runbooks served at /runbooks/")
    args = parser.parse_args(argv)
    try:
        server = PagerServer((args.host, args.port), args.out, args.runbooks)
    except OSError as exc:
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
