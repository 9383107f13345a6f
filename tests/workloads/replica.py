"""One replica of an instrumented app, driven line by line on stdin (tests and benchmarks).

``python replica.py`` with telemetry from the ``OTEL_*`` environment, then commands:

* ``hold N``: keep exactly N model calls open (``redline.model_call`` for target ``sim``:
  server 127.0.0.1, model sim-model), so the driven concurrency is known exactly;
* ``loop URL K``: K workers calling the sim through the real ``openai`` SDK, back to back;
* ``stop``: end the loop, close held calls and answer with one JSON line: calls finished
  (by the app's own count), each call's ``[start unix time, seconds]`` and how long
  ``redline.shutdown_telemetry()`` took (``quit`` skips the shutdown; ``exit`` shuts down
  with calls still held, to show the final export zeroes them).

Every command is acknowledged with ``ok <unix time>`` once it took effect.
"""

import json
import sys
import threading
import time

import redline

held: list = []
records: list = []
lock = threading.Lock()
stop = threading.Event()
workers: list[threading.Thread] = []


def hold(n: int) -> None:
    while len(held) < n:
        held.append(redline.model_call(provider="openai", model="sim-model",
                                       server_address="127.0.0.1", server_port=8000).start())
    while len(held) > n:
        held.pop().end()


def worker(url: str) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="test-key", max_retries=0)
    while not stop.is_set():
        t0, wall = time.perf_counter(), time.time()
        client.chat.completions.create(model="sim-model", max_tokens=2,
                                       messages=[{"role": "user", "content": "hi"}])
        with lock:
            records.append([wall, time.perf_counter() - t0])
    client.close()


def main() -> None:
    redline.configure_telemetry()
    redline.instrument()
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "hold":
            hold(int(args[0]))
        elif cmd == "loop":
            for _ in range(int(args[1])):
                workers.append(threading.Thread(target=worker, args=(args[0],), daemon=True))
                workers[-1].start()
        elif cmd in ("stop", "quit", "exit"):
            stop.set()
            for w in workers:
                w.join()
            if cmd != "exit":
                hold(0)
            took = None
            if cmd != "quit":
                t0 = time.perf_counter()
                redline.shutdown_telemetry()
                took = time.perf_counter() - t0
            print(json.dumps({"calls": len(records), "records": records, "shutdown_s": took}),
                  flush=True)
            return
        print("ok", time.time(), flush=True)


if __name__ == "__main__":
    main()
