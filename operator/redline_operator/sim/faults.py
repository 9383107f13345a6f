"""Fault injection: scripted faults for tests, random rates for demos.

Scripted faults are consumed in order, one per inference request, before any random
fault is drawn, so a test states exactly what the next requests will see::

    [{"kind": "status", "status": 429, "retry_after": 0.05, "count": 2},
     {"kind": "status", "status": 500, "count": 1},
     {"kind": "slow", "delay": 3.0, "count": 1},
     {"kind": "drop_stream", "after_chunks": 3, "count": 1},
     {"kind": "reset", "count": 1}]
"""

from __future__ import annotations

import random
import threading
from collections import deque
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from redline_operator.sim.config import SimConfig

__all__ = ["StatusFault", "SlowFault", "DropFault", "ResetFault", "Fault", "FaultScript",
           "FaultPlan"]


class _FaultBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(1, ge=1, description="how many consecutive requests get this fault")


class StatusFault(_FaultBase):
    """Answer with an HTTP error instead of serving the request."""

    kind: Literal["status"]
    status: int = Field(ge=400, le=599)
    retry_after: float | None = Field(None, ge=0, description="seconds, sent as Retry-After")
    message: str | None = None

    def describe(self) -> str:
        """Short label used in the request log."""
        return f"status:{self.status}"


class SlowFault(_FaultBase):
    """Hold the request ``delay`` seconds before it reaches the queue (no slot held)."""

    kind: Literal["slow"]
    delay: float = Field(ge=0)

    def describe(self) -> str:
        """Short label used in the request log."""
        return f"slow:{self.delay:g}"


class DropFault(_FaultBase):
    """Close the TCP connection after ``after_chunks`` content chunks (no final chunk).

    A non-streaming request gets its headers and part of its body, then the cut.
    """

    kind: Literal["drop_stream"]
    after_chunks: int = Field(0, ge=0)

    def describe(self) -> str:
        """Short label used in the request log."""
        return f"drop_stream:{self.after_chunks}"


class ResetFault(_FaultBase):
    """Abort the TCP connection before any response byte: the client sees a connection
    error (not a status, not a timeout). Logged with ``status`` 0 and outcome ``reset``."""

    kind: Literal["reset"]

    def describe(self) -> str:
        """Short label used in the request log."""
        return "reset"


Fault = Annotated[StatusFault | SlowFault | DropFault | ResetFault, Field(discriminator="kind")]
FaultScript = TypeAdapter(list[Fault])


class FaultPlan:
    """Hands out the fault, if any, for each new request; thread-safe.

    Example:
        >>> plan = FaultPlan(SimConfig())
        >>> plan.load(FaultScript.validate_python([{"kind": "status", "status": 500}]))
        >>> plan.next().describe(), plan.next()
        ('status:500', None)
    """

    def __init__(self, config: SimConfig) -> None:
        self._config = config
        self._rng = random.Random(f"faults:{config.seed}")
        self._script: deque[list] = deque()  # [fault, remaining]
        self._lock = threading.Lock()

    def load(self, faults: list[StatusFault | SlowFault | DropFault]) -> None:
        """Append scripted faults after any still pending."""
        with self._lock:
            self._script.extend([f, f.count] for f in faults)

    def pending(self) -> list[dict]:
        """Scripted faults not yet consumed, with their remaining counts."""
        with self._lock:
            return [{**f.model_dump(), "count": n} for f, n in self._script]

    def reset(self) -> None:
        """Forget scripted faults and restart the random stream from the seed."""
        with self._lock:
            self._script.clear()
            self._rng = random.Random(f"faults:{self._config.seed}")

    def next(self) -> StatusFault | SlowFault | DropFault | None:
        """The fault for the next request: scripted first, else drawn from the rates."""
        with self._lock:
            if self._script:
                entry = self._script[0]
                entry[1] -= 1
                if entry[1] == 0:
                    self._script.popleft()
                return entry[0]
            return self._draw()

    def _draw(self) -> StatusFault | SlowFault | DropFault | None:
        c = self._config
        if not (c.error_rate or c.rate_limit_rate or c.slow_rate or c.drop_rate):
            return None
        x = self._rng.random()
        for rate, fault in (
            (c.error_rate, lambda: StatusFault(kind="status", status=500)),
            (c.rate_limit_rate, lambda: StatusFault(kind="status", status=429,
                                                   retry_after=c.queue_full_retry_after_s)),
            (c.slow_rate, lambda: SlowFault(kind="slow", delay=c.slow_delay_s)),
            (c.drop_rate, lambda: DropFault(
                kind="drop_stream", after_chunks=self._rng.randrange(c.default_output_tokens))),
        ):
            if x < rate:
                return fault()
            x -= rate
        return None
