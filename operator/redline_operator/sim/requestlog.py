"""What the server actually did with each request, served at ``GET /sim/log``.

Times are Unix epoch seconds (derived from the monotonic clock, so they are mutually
consistent) and can be compared with a client's ``time.time()``.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass

__all__ = ["RequestRecord", "RequestLog"]


@dataclass
class RequestRecord:
    """One inference request as the server saw it.

    ``outcome`` is ``ok``, ``error`` (an HTTP error was sent), ``rejected`` (queue full),
    ``dropped`` (connection cut on purpose) or ``cancelled`` (the client went away).
    """

    id: str
    endpoint: str
    model: str
    stream: bool
    arrival: float
    admitted: float | None = None
    first_token: float | None = None
    finished: float | None = None
    status: int = 200
    outcome: str = "ok"
    fault: str | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    chunks_sent: int = 0


class RequestLog:
    """A bounded, ordered log of :class:`RequestRecord`.

    Example:
        >>> log = RequestLog(limit=10)
        >>> rec = log.open("req-1", "/v1/chat/completions", "m", stream=False)
        >>> [r["id"] for r in log.dump()]
        ['req-1']
    """

    def __init__(self, limit: int) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=limit)
        self._wall0 = time.time()
        self._mono0 = time.monotonic()

    def epoch(self, mono: float | None) -> float | None:
        """Convert a ``time.monotonic()`` reading to epoch seconds."""
        return None if mono is None else self._wall0 + (mono - self._mono0)

    def open(self, req_id: str, endpoint: str, model: str, stream: bool) -> RequestRecord:
        """Start the record of a request that has just arrived."""
        rec = RequestRecord(req_id, endpoint, model, stream, arrival=time.time())
        self._records.append(rec)
        return rec

    def dump(self) -> list[dict]:
        """All kept records, oldest first, as JSON-ready dicts."""
        return [asdict(r) for r in self._records]

    def clear(self) -> None:
        """Forget every record."""
        self._records.clear()
