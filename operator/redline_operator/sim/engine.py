"""The continuous-batching model: one loop steps every running sequence at once.

Like vLLM's scheduler, each engine step first admits waiting sequences into free slots
(FIFO), then runs one iteration (one forward pass) in which the new sequences are
prefilled and every sequence already decoding produces one token. Prefill shares the
step with decode, so long prompts stretch everybody's inter-token time (prefill/decode
interference; see :meth:`SimConfig.step_s`). Below
``slots`` in flight a request only pays ``decode_s(batch)``, which grows slowly with the
batch; above it, requests queue for a slot and latency rises with the queue.

Time is kept on a virtual timeline (each step ends at ``start + duration``) and the loop
sleeps until the step's end, so event-loop jitter does not accumulate across steps.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable

from redline_operator.sim.config import SimConfig

__all__ = ["Sequence", "Engine", "QueueFull"]


class QueueFull(Exception):
    """The waiting queue is at ``queue_limit``; the request must be rejected."""


class Sequence:
    """One request inside the engine.

    Times are ``time.monotonic()`` seconds; ``None`` until the event happened.
    """

    __slots__ = (
        "number", "prompt_tokens", "max_tokens", "generated", "arrival", "admitted",
        "first_token", "finished", "cancelled", "_changed",
    )

    def __init__(self, number: int, prompt_tokens: int, max_tokens: int) -> None:
        self.number = number
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.generated = 0
        self.arrival = time.monotonic()
        self.admitted: float | None = None
        self.first_token: float | None = None
        self.finished: float | None = None
        self.cancelled = False
        self._changed = asyncio.Event()

    @property
    def done(self) -> bool:
        """Whether the sequence produced all its tokens."""
        return self.finished is not None

    async def wait_beyond(self, seen: int) -> None:
        """Wait until more than ``seen`` tokens exist, or the sequence ends."""
        while self.generated <= seen and self.finished is None and not self.cancelled:
            self._changed.clear()
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()


class Engine:
    """N slots, a FIFO queue, and a single stepping loop.

    Example:
        >>> async def demo():
        ...     engine = Engine(SimConfig(decode_base_s=0.001, prefill_base_s=0.001))
        ...     task = asyncio.create_task(engine.run())
        ...     seq = engine.submit(prompt_tokens=10, max_tokens=3)
        ...     await seq.wait_beyond(2)
        ...     task.cancel()
        ...     return seq.generated
        >>> asyncio.run(demo())
        3
    """

    def __init__(
        self,
        config: SimConfig,
        on_finish: Callable[[Sequence], None] | None = None,
    ) -> None:
        self.config = config
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._numbers = itertools.count(1)
        self._wake = asyncio.Event()
        self.on_finish = on_finish

    @property
    def num_running(self) -> int:
        """Sequences holding a slot (prefilling or decoding)."""
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        """Sequences queued for a slot, cancelled ones excluded."""
        return sum(1 for s in self.waiting if not s.cancelled)

    def next_number(self) -> int:
        """A fresh request number (also used for requests rejected before queueing)."""
        return next(self._numbers)

    def submit(self, prompt_tokens: int, max_tokens: int, number: int | None = None) -> Sequence:
        """Queue a request.

        Args:
            prompt_tokens: Prompt length; sets the prefill cost.
            max_tokens: Tokens to generate; 0 means prefill only (embeddings).
            number: Request number from :meth:`next_number`, or a fresh one.

        Returns:
            The sequence; await :meth:`Sequence.wait_beyond` to follow it.

        Raises:
            QueueFull: ``queue_limit`` requests are already waiting and no slot is free.
        """
        free = self.config.slots - len(self.running)
        if self.num_waiting - free >= self.config.queue_limit:
            raise QueueFull
        seq = Sequence(next(self._numbers) if number is None else number, prompt_tokens,
                       max_tokens)
        self.waiting.append(seq)
        self._wake.set()
        return seq

    def cancel(self, seq: Sequence) -> None:
        """Abort a sequence (client gone); its slot frees at the next step."""
        if seq.finished is None and not seq.cancelled:
            seq.cancelled = True
            seq._notify()
            self._wake.set()

    async def run(self) -> None:
        """Step forever; cancel the task to stop."""
        step_end: float | None = None
        while True:
            self._drop_cancelled()
            if not self.running and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                step_end = None
                continue
            # Continue the virtual timeline while busy; restart it from now after idling.
            start = time.monotonic() if step_end is None else step_end
            decoding = list(self.running)
            admitted = self._admit(start)
            if admitted and admitted[-1].arrival > start:
                # Behind schedule, the virtual step start can precede an arrival; a step
                # never starts before the work it prefills arrived.
                start = admitted[-1].arrival
                for seq in admitted:
                    seq.admitted = max(seq.admitted or start, seq.arrival)
            duration = self.config.step_s([s.prompt_tokens for s in admitted], len(decoding))
            step_end = start + duration
            delay = step_end - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)  # behind schedule: catch up, but let I/O run
            self._complete_step(step_end, admitted, decoding)

    def _drop_cancelled(self) -> None:
        if any(s.cancelled for s in self.running):
            self.running = [s for s in self.running if not s.cancelled]
        while self.waiting and self.waiting[0].cancelled:
            self.waiting.popleft()

    def _admit(self, now: float) -> list[Sequence]:
        admitted: list[Sequence] = []
        while self.waiting and len(self.running) < self.config.slots:
            seq = self.waiting.popleft()
            if seq.cancelled:
                continue
            seq.admitted = now
            self.running.append(seq)
            admitted.append(seq)
        return admitted

    def _complete_step(self, now: float, admitted: list[Sequence],
                       decoding: list[Sequence]) -> None:
        for seq in itertools.chain(decoding, admitted):
            if seq.cancelled:
                continue
            if seq.max_tokens > 0:
                seq.generated += 1
            if seq.first_token is None:
                seq.first_token = now
            if seq.generated >= seq.max_tokens:
                seq.finished = now
                if self.on_finish is not None:
                    self.on_finish(seq)
            seq._notify()
        self.running = [s for s in self.running if s.finished is None and not s.cancelled]
