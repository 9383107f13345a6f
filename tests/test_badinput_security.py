"""Local security and bad input outside redline.yaml (issue 19).

The local pager bounds what it reads and stores and only takes Alertmanager webhooks;
rendered secrets never go through a planted file; pid files never make redline signal a
process whose identity is unproven; output folders that cannot take the files give a
clear error and leave every file as it was; servers that are not Prometheus or not an
OpenAI-compatible API are named as such.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from tests.badinput import BASE, classify, make_project, set_key, snapshot, yaml_text

from redline.config import load_config
from redline_operator.alerts.alertmanager import SecretsError, render_secrets
from redline_operator.fileset import write_set
from redline_operator.stack import Stack, processes
from redline_operator.stack.pager import MAX_BODY, TOKEN_HEADER, PagerServer
from redline_operator.sweep.knee import analyse
from redline_operator.sweep.stats import StepStats
from redline_operator.sweep.yaml_update import write_saturation

WEBHOOK = {"version": "4", "status": "firing", "receiver": "local-pager",
           "alerts": [{"status": "firing", "labels": {"alertname": "X", "target": "sim"}}]}


# --- the local pager ------------------------------------------------------------------------

@pytest.fixture
def pager(tmp_path):
    server = PagerServer(("127.0.0.1", 0), tmp_path / "pages.jsonl", max_file_bytes=4096)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _raw(server: PagerServer, request: bytes) -> bytes:
    """Send a request head as it is (no client fixes up a bad header), but no body, and
    read the answer: a server that answers has not waited to read a body."""
    with socket.create_connection(server.server_address, timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("length, status", [(b"-1", b"400"), (b"abc", b"400"), (b"", b"411"),
                                            (str(MAX_BODY + 1).encode(), b"413")])
def test_pager_refuses_bad_content_length_without_reading_the_body(pager, capfd, length,
                                                                    status):
    header = b"Content-Length: " + length + b"\r\n" if length else b""
    answer = _raw(pager, b"POST /alerts HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n")
    assert answer.split(b"\r\n")[0].split(b" ")[1] == status, answer[:200]
    assert not pager.out.exists() or pager.out.stat().st_size == 0
    assert "Traceback" not in capfd.readouterr().err


def test_pager_refuses_chunked_bodies(pager):
    answer = _raw(pager, b"POST /alerts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                         b"\r\n")
    assert b" 411 " in answer.split(b"\r\n")[0]


@pytest.mark.parametrize("payload", [[1, 2, 3], {"status": "firing"}, "page",
                                     {"version": "4", "status": "firing", "alerts": []},
                                     {"version": "4", "status": "x", "alerts": [{}]}])
def test_pager_records_only_alertmanager_webhooks(pager, payload):
    url = f"http://127.0.0.1:{pager.server_address[1]}/alerts"
    assert httpx.post(url, json=payload).status_code == 400
    assert httpx.post(url, json=WEBHOOK).status_code == 200
    assert [p["payload"] for p in httpx.get(url).json()["pages"]] == [WEBHOOK]


def test_pager_file_is_capped_and_rotated(pager):
    url = f"http://127.0.0.1:{pager.server_address[1]}/alerts"
    for _ in range(60):  # ~200 bytes each, 12 KiB in all against a 4 KiB cap
        assert httpx.post(url, json=WEBHOOK).status_code == 200
    assert pager.out.stat().st_size <= 4096
    assert pager.out.with_name("pages.jsonl.1").stat().st_size <= 4096
    assert 0 < len(httpx.get(url).json()["pages"]) < 60


def test_pager_wipe_needs_the_local_token(pager):
    url = f"http://127.0.0.1:{pager.server_address[1]}/alerts"
    httpx.post(url, json=WEBHOOK)
    assert httpx.delete(url).status_code == 403
    assert httpx.delete(url, headers={TOKEN_HEADER: "guess"}).status_code == 403
    assert len(httpx.get(url).json()["pages"]) == 1
    token_file = pager.out.with_name("pages.jsonl.token")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert httpx.delete(url, headers={TOKEN_HEADER: token}).status_code == 200
    assert httpx.get(url).json()["pages"] == []


def test_pager_listens_on_loopback_only(tmp_path):
    with pytest.raises(OSError, match="loopback only"):
        PagerServer(("0.0.0.0", 0), tmp_path / "pages.jsonl")


# --- rendered secrets -----------------------------------------------------------------------

def _secret_cfg(tmp_path: Path, env_name: str = "PD_KEY") -> Path:
    data = set_key(BASE, ("pager", "receivers"), [
        *BASE["pager"]["receivers"],
        {"type": "pagerduty", "name": "pd", "routing_key_env": env_name}])
    path = tmp_path / "redline.yaml"
    path.write_text(yaml_text(data))
    return path


def test_secrets_never_follow_a_planted_symlink(tmp_path):
    cfg = load_config(_secret_cfg(tmp_path))
    out = tmp_path / "secrets"
    out.mkdir(mode=0o700)
    victim = tmp_path / "world-readable.txt"
    victim.write_text("")
    victim.chmod(0o644)
    (out / ".PD_KEY.tmp").symlink_to(victim)  # where the old code wrote first
    (out / "PD_KEY").symlink_to(victim)
    with pytest.raises(SecretsError, match="not a regular file"):
        render_secrets(cfg, out, environ={"PD_KEY": "s3cret"})
    assert victim.read_text() == ""
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()] == []


def test_secrets_are_0600_from_creation_and_the_dir_is_tightened(tmp_path):
    cfg = load_config(_secret_cfg(tmp_path))
    out = tmp_path / "secrets"
    out.mkdir(mode=0o755)
    out.chmod(0o755)
    [path] = render_secrets(cfg, out, environ={"PD_KEY": "s3cret"})
    assert path.read_text() == "s3cret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(out.stat().st_mode) == 0o700


def test_secrets_refuse_a_symlinked_directory(tmp_path):
    cfg = load_config(_secret_cfg(tmp_path))
    real = tmp_path / "elsewhere"
    real.mkdir()
    (tmp_path / "secrets").symlink_to(real)
    with pytest.raises(SecretsError, match="not a directory"):
        render_secrets(cfg, tmp_path / "secrets", environ={"PD_KEY": "s3cret"})
    assert list(real.iterdir()) == []


def test_bad_secret_env_name_is_a_clear_config_error(tmp_path):
    project = make_project(tmp_path, _secret_cfg(tmp_path, "A/B").read_text())
    result = classify(project, ["rules", "--render-secrets"], validate=False)
    assert result.outcome == "clear_error", result
    assert "routing_key_env" in result.stderr and "should match pattern" in result.stderr


# --- pid files ------------------------------------------------------------------------------

def _forge_pid_files(stack: Stack, pid: int, **record) -> None:
    stack.state_dir.mkdir(parents=True, exist_ok=True)
    for c in stack.components():
        body = {"pid": pid, "start_ticks": 0, "marker": "", "argv": [], **record}
        (stack.state_dir / f"{c.name}.pid").write_text(json.dumps(body))


@pytest.mark.parametrize("forged", [
    {},  # the file: start_ticks 0, empty marker
    {"marker": "sleep"},  # right marker, unknown start time
    {"marker": "sleep", "argv": ["sleep", "300"]},  # and the argv, still no start time
    {"marker": "sleep", "argv": ["sleep", "301"], "start_ticks": "REAL"},  # wrong argv
])
def test_stack_down_never_signals_an_unproven_process(repo_root, tmp_path, forged):
    victim = subprocess.Popen(["sleep", "300"])
    try:
        if forged.get("start_ticks") == "REAL":
            forged = {**forged, "start_ticks": processes._start_ticks(victim.pid)}
        stack = Stack(repo_root, state_dir=tmp_path / "state")
        _forge_pid_files(stack, victim.pid, **forged)
        assert all(row.pid is None and not row.ready for row in stack.status())
        stack.down()
        time.sleep(0.2)
        assert victim.poll() is None, "an unrelated process was signalled"
    finally:
        victim.kill()
        victim.wait()


def test_a_proven_process_is_stopped_and_readiness_is_its_own(tmp_path):
    port_holder = socket.socket()
    port_holder.bind(("127.0.0.1", 0))
    port_holder.listen()
    port = port_holder.getsockname()[1]
    argv = [sys.executable, "-c", "import time; time.sleep(300)", "redline-test-marker"]
    proc = processes.spawn(argv, pid_file=tmp_path / "x.pid", log_file=tmp_path / "x.log",
                           marker="redline-test-marker", env=dict(os.environ), cwd=tmp_path)
    try:
        record = processes.read_pid(tmp_path / "x.pid")
        assert record is not None
        deadline = time.monotonic() + 10  # a loaded machine may still be exec'ing it
        while not processes.is_alive(record) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes.is_alive(record)
        # This test process holds the port, not the child: the child is not ready.
        assert processes.listens_on(os.getpid(), port)
        assert not processes.listens_on(proc.pid, port)
        assert processes.stop(record, proc=proc) == "stopped"
    finally:
        port_holder.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


# --- output folders that cannot take the files ----------------------------------------------

def test_rules_and_dashboards_out_on_a_file_is_a_clear_error(tmp_path):
    project = make_project(tmp_path, yaml_text(set_key(BASE, ("targets", 0, "name"), "other")))
    (project / "blocker").write_text("a file, not a folder\n")
    for command in (["rules", "--out", "blocker"], ["dashboards", "--out", "blocker"]):
        result = classify(project, command, validate=False)
        assert result.outcome == "clear_error", result
        assert "blocker" in result.stderr and "nothing was changed" in result.stderr


def test_a_failed_write_leaves_the_whole_set_as_it_was(tmp_path):
    # A new knee changes every rule file; a directory where its promtool test must go
    # makes one write of the set fail.
    config = yaml_text(set_key(BASE, ("targets", 0, "saturation_concurrency"), 20))
    project = make_project(tmp_path, config)
    (project / "alerts" / "tests" / "sim.test.yml").unlink()
    (project / "alerts" / "tests" / "sim.test.yml").mkdir()
    first = sorted(p.name for p in (project / "dashboards").glob("*.json"))[-1]
    (project / "dashboards" / first).unlink()
    (project / "dashboards" / first).mkdir()
    before = snapshot(project)
    for command in (["rules"], ["dashboards"]):
        result = classify(project, command, validate=False)
        assert result.outcome == "clear_error", result
    assert snapshot(project) == before
    assert not [p for p in project.rglob("*.tmp")] and not [p for p in project.rglob("*.old")]


def test_write_set_rolls_back_when_a_rename_fails(tmp_path, monkeypatch):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    b.write_text("old b")
    real_replace, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError, match="No space"):
        write_set({a: "new a", b: "new b", tmp_path / "c.txt": "new c"})
    monkeypatch.setattr(os, "replace", real_replace)
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


# --- servers that are not what the flag says ------------------------------------------------

class _Fixed(http.server.BaseHTTPRequestHandler):
    body, kind, seen = b"", "application/json", []

    def do_GET(self):  # noqa: N802
        self._send()

    def do_POST(self):  # noqa: N802
        self._send()

    def _send(self):
        type(self).seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", self.kind)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    servers = []

    def start(body: bytes, kind: str = "application/json") -> str:
        handler = type("H", (_Fixed,), {"body": body, "kind": kind, "seen": []})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        start.handler = handler
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("body", [b"[1,2,3]", b'{"status":"success","data":{}}',
                                  b'{"status":"success","data":{"result":[{"values":7}]}}',
                                  b"<html>hello</html>"])
def test_non_prometheus_answers_are_clear_errors(tmp_path, fake_server, body):
    url = fake_server(body)
    project = make_project(tmp_path, yaml_text(BASE))
    for command in (["knee", "--prometheus", url, "--target", "sim"],
                    ["top", "--once", "--prometheus", url],
                    ["rules", "--check-targets", "--prometheus", url]):
        result = classify(project, command, validate=False)
        if command[0] == "top":  # top shows the error in its frame and exits 1
            assert result.outcome != "traceback" and result.code == 1, result
            assert "Prometheus" in result.stdout, result
        else:
            assert result.outcome == "clear_error" and "Prometheus" in result.stderr, result


def test_sweep_preflight_refuses_a_200_html_answer_before_any_load(tmp_path, fake_server):
    url = fake_server(b"<html>not an API</html>", "text/html")
    project = make_project(tmp_path, yaml_text(BASE))
    result = classify(project, ["sweep", "--base-url", url + "/v1", "--model", "m",
                                "--out", str(tmp_path / "out")], validate=False)
    assert result.outcome == "clear_error", result
    assert "text/html" in result.stderr and "event-stream" in result.stderr
    assert len(fake_server.handler.seen) == 1  # the one test request, no load
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.parametrize("flags, message", [
    (["--levels", ""], "bad --levels"),
    (["--levels", "1,100000"], "at most 2048"),
    (["--max-concurrency", "10000000000000"], "--max-concurrency must be between"),
    (["--request-timeout", "0"], "--request-timeout must be"),
    (["--p95-explode", "-3"], "--p95-explode must be"),
    (["--warmup", "nan"], "--warmup must be"),
    (["--out", "blocker"], "--out blocker: cannot write results"),
])
def test_sweep_limits_are_checked_before_any_load(tmp_path, fake_server, flags, message):
    url = fake_server(b"{}")
    project = make_project(tmp_path, yaml_text(BASE))
    (project / "blocker").write_text("")
    result = classify(project, ["sweep", "--base-url", url + "/v1", "--model", "m",
                                *flags], validate=False)
    assert result.outcome == "clear_error", result
    assert message in result.stderr, result.stderr
    assert fake_server.handler.seen == []


def test_sweep_help_prefers_the_environment_for_the_key():
    from tests.badinput import run_cli

    done = run_cli(["sweep", "--help"], Path.cwd())
    assert "OPENAI_API_KEY" in done.stdout and "ps" in done.stdout


def _step(c: int, success: float) -> StepStats:
    return StepStats(concurrency=c, duration_s=10, requests=100, ok=int(100 * success),
                     success_rate=success, latency_p50=1, latency_p95=1 + c / 10,
                     latency_p99=2, latency_mean=1, ttft_p50=0.1, ttft_p95=0.1, ttft_p99=0.1,
                     throughput_rps=c, tokens_per_s=c, attempts=100, retries=0, retry_rate=0,
                     mean_in_flight=c, little_expected_in_flight=c, little_rel_error=0)


def test_a_failing_step_is_never_accepted_even_first():
    a = analyse([_step(1, 0.0), _step(2, 0.0), _step(4, 0.0)])
    assert not any(v.accepted for v in a.verdicts)
    assert a.recommended_cap is None
    assert "below 90%" in a.verdicts[0].reasons[0]


# --- knee and dashboards flags --------------------------------------------------------------

def test_knee_write_threshold_writes_through_a_symlink(tmp_path):
    real = tmp_path / "real" / "redline.yaml"
    real.parent.mkdir()
    real.write_text(yaml_text(BASE))
    real.chmod(0o640)
    link = tmp_path / "redline.yaml"
    link.symlink_to(real)
    assert write_saturation(link, "sim", 24) == 16
    assert link.is_symlink()
    assert load_config(real).targets[0].saturation_concurrency == 24
    assert stat.S_IMODE(real.stat().st_mode) == 0o640


@pytest.mark.parametrize("command, message", [
    (["knee", "--prometheus", "http://127.0.0.1:9", "--min-samples", "-1"], "--min-samples"),
    (["knee", "--prometheus", "http://127.0.0.1:9", "--window", "1y"], "--window"),
    (["dashboards", "--render-png", "x.png", "--target", "nosuch"], "no target named 'nosuch'"),
])
def test_bad_flags_are_clear_errors(tmp_path, command, message):
    project = make_project(tmp_path, yaml_text(BASE))
    result = classify(project, command, validate=False)
    assert result.outcome == "clear_error", result
    assert message in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_alertmanager_webhook_is_recorded(stack_binaries, pager, tmp_path):
    """The webhook-only filter lets the real thing through (Alertmanager's own payload)."""
    port = _free_port()
    (tmp_path / "am.yml").write_text(
        "route: {receiver: p, group_wait: 1s}\nreceivers:\n  - name: p\n    webhook_configs:\n"
        f"      - url: http://127.0.0.1:{pager.server_address[1]}/alerts\n")
    am = subprocess.Popen([str(stack_binaries / "alertmanager"),
                           f"--config.file={tmp_path / 'am.yml'}",
                           f"--storage.path={tmp_path / 'data'}",
                           f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        processes.wait_ready("alertmanager", f"http://127.0.0.1:{port}/-/ready", am,
                             tmp_path / "none.log", timeout=60)
        httpx.post(f"http://127.0.0.1:{port}/api/v2/alerts",
                   json=[{"labels": {"alertname": "Check", "severity": "page"}}],
                   timeout=10).raise_for_status()
        deadline = time.monotonic() + 60
        pages = []
        while not pages and time.monotonic() < deadline:
            time.sleep(0.2)
            pages = [json.loads(line) for line in pager.out.read_text().splitlines()] \
                if pager.out.exists() else []
        assert pages and pages[0]["payload"]["alerts"][0]["labels"]["alertname"] == "Check"
    finally:
        am.terminate()
        am.wait()
