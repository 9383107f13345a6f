"""Agent-session workloads: multi-turn sessions with tool calls and think time.

A **session** is N turns. Each turn is one model call (streamed or not) whose prompt is the
conversation so far — the first user message, then every assistant reply and user message
before it, as a real chat grows — optionally followed by a tool call of a given duration,
then think time before the next turn (none after the last). A closed-loop session sweep
keeps exactly S sessions open: a worker starts its next session as soon as one ends.

The file is YAML, every key optional (these are the defaults)::

    turns: 3              # N, LO-HI or A,B,C
    prompt_tokens: 64     # first user message
    turn_tokens: 16       # each later user message
    output_tokens: 16     # max_tokens of every model call
    stream: true          # streamed or not
    tool:
      probability: 1.0    # share of turns followed by a tool call
      duration_s: 0.5     # seconds: S, LO-HI or A,B,C
    think_s: 1.0          # seconds between turns: S, LO-HI or A,B,C

**Duty cycle.** The share of session time a session holds a model call. Measured as mean
model calls in flight / mean sessions in flight over the step (both time-averages of the
recorded intervals, never assumed). Its design value, from the workload's own means and the
measured mean call latency L, is ``turns*L / (turns*L + turns*p*tool + (turns-1)*think)``.

**Sessions vs calls (Little's law).** With S sessions open, calls in flight = S x duty.
So a server whose model-call knee is K holds about ``K / duty`` concurrent sessions; the
session sweep measures that number directly, and the analysis prints both and how far apart
they are.

Example::

    spec = SessionWorkload.from_file("sessions.yaml")
    async with SessionLoadGenerator(base_url=url, api_key="k", model="m", sessions=spec) as g:
        step = await g.run_step(8, StepPlan(min_duration_s=20))
    print(step.duty_cycle, step.sessions_in_flight)
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

from redline_operator.sweep.load import LoadGenerator, RequestRecord
from redline_operator.sweep.stats import StepStats, percentile, summarize
from redline_operator.sweep.workload import TokenDist, parse_spread

__all__ = ["SecondsDist", "SessionWorkload", "SessionRecord", "SessionLoadGenerator",
           "summarize_sessions", "MAX_TURNS"]

#: A bound on turns per session: a typo like 30000 would otherwise run for hours.
MAX_TURNS = 1000
#: A bound on any single duration of the file, in seconds.
MAX_SECONDS = 3600.0


@dataclass(frozen=True)
class SecondsDist:
    """A duration distribution in seconds: ``0.5`` (fixed), ``0.2-0.8`` (uniform), ``0.1,1``."""

    values: tuple[float, ...] = ()
    low: float = 0.0
    high: float = 0.0

    @classmethod
    def parse(cls, text: object) -> SecondsDist:
        """Parse a number, ``LO-HI`` or ``A,B,C`` (seconds, 0..3600).

        Raises:
            ValueError: none of those, a negative or non-finite value, or above 3600 s.
        """
        raw = str(text).strip()
        try:
            values, low, high = parse_spread(raw, float,
                                             lambda v: math.isfinite(v) and 0 <= v <= MAX_SECONDS)
        except ValueError:
            raise ValueError(f"bad duration {raw!r}: expected seconds S, LO-HI or A,B,C with "
                             f"0 <= S <= {MAX_SECONDS:g}") from None
        return cls(values=values, low=low, high=high)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else (self.low + self.high) / 2

    def sample(self, rng: random.Random) -> float:
        return rng.choice(self.values) if self.values else rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class SessionWorkload:
    """What one agent session does. See the module docstring for the file format."""

    turns: TokenDist = TokenDist(values=(3,))
    prompt_tokens: TokenDist = TokenDist(values=(64,))
    turn_tokens: TokenDist = TokenDist(values=(16,))
    output_tokens: TokenDist = TokenDist(values=(16,))
    stream: bool = True
    tool_probability: float = 1.0
    tool_s: SecondsDist = SecondsDist(values=(0.5,))
    think_s: SecondsDist = SecondsDist(values=(1.0,))

    _KEYS = ("turns", "prompt_tokens", "turn_tokens", "output_tokens", "stream", "tool",
             "think_s")

    @classmethod
    def from_file(cls, path: str | Path) -> SessionWorkload:
        """Load a session file.

        Raises:
            ValueError: the file is missing, not YAML, has an unknown key or a bad value;
                the message names the file, the line and the field.
        """
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ValueError(f"{path}: cannot read session file: {why}") from None
        try:
            doc = YAML(typ="rt").load(text)
        except YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from None
        if doc is None:
            return cls()
        if not isinstance(doc, dict):
            raise ValueError(f"{path}:1: expected a mapping of session settings, got "
                             f"{type(doc).__name__}")
        return cls._from_mapping(doc, path)

    @classmethod
    def _from_mapping(cls, doc: dict, path: Path) -> SessionWorkload:
        def where(mapping, key: str) -> str:
            try:
                return f"{path}:{mapping.lc.key(key)[0] + 1}"
            except (AttributeError, KeyError, TypeError):
                return str(path)

        def field_value(mapping, key: str, parse, prefix: str = ""):
            try:
                return parse(mapping[key])
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{where(mapping, key)}: field {prefix}{key}: {exc}") from None

        unknown = [k for k in doc if k not in cls._KEYS]
        if unknown:
            raise ValueError(f"{where(doc, unknown[0])}: unknown field {unknown[0]!r}; "
                             f"expected one of {', '.join(cls._KEYS)}")
        kw: dict = {}
        for key in ("turns", "prompt_tokens", "turn_tokens", "output_tokens"):
            if key in doc:
                kw[key] = field_value(doc, key, lambda v: TokenDist.parse(str(v)))
        if "turns" in kw and max(kw["turns"].values or (kw["turns"].high,)) > MAX_TURNS:
            raise ValueError(f"{where(doc, 'turns')}: field turns: at most {MAX_TURNS} turns")
        if "stream" in doc:
            kw["stream"] = field_value(doc, "stream", _boolean)
        if "think_s" in doc:
            kw["think_s"] = field_value(doc, "think_s", SecondsDist.parse)
        if "tool" in doc:
            tool = doc["tool"]
            if tool is None or tool is False:
                kw["tool_probability"] = 0.0
            elif not isinstance(tool, dict):
                raise ValueError(f"{where(doc, 'tool')}: field tool: expected a mapping with "
                                 "probability and duration_s, or false")
            else:
                bad = [k for k in tool if k not in ("probability", "duration_s")]
                if bad:
                    raise ValueError(f"{where(tool, bad[0])}: unknown field tool.{bad[0]}; "
                                     "expected probability or duration_s")
                if "probability" in tool:
                    kw["tool_probability"] = field_value(tool, "probability", _probability,
                                                         "tool.")
                if "duration_s" in tool:
                    kw["tool_s"] = field_value(tool, "duration_s", SecondsDist.parse, "tool.")
        return cls(**kw)

    def design_duty_cycle(self, mean_call_s: float) -> float:
        """The share of session time holding a model call, given the mean call latency."""
        n = self.turns.mean
        calls = n * mean_call_s
        rest = n * self.tool_probability * self.tool_s.mean + max(n - 1, 0) * self.think_s.mean
        return calls / (calls + rest) if calls + rest > 0 else math.nan

    def to_dict(self) -> dict:
        return {"turns": _dist_text(self.turns), "prompt_tokens": _dist_text(self.prompt_tokens),
                "turn_tokens": _dist_text(self.turn_tokens),
                "output_tokens": _dist_text(self.output_tokens), "stream": self.stream,
                "tool": {"probability": self.tool_probability,
                         "duration_s": _dist_text(self.tool_s)},
                "think_s": _dist_text(self.think_s)}


def _dist_text(d: TokenDist | SecondsDist) -> str:
    if d.values:
        return ",".join(f"{v:g}" for v in d.values)
    return f"{d.low:g}-{d.high:g}"


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {value!r}")


def _probability(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"expected a number between 0 and 1, got {value!r}")
    return float(value)


@dataclass
class SessionRecord:
    """One session, times in ``time.monotonic()`` seconds."""

    start: float
    end: float = math.nan
    ok: bool = True
    done: bool = False
    calls: int = 0


class SessionLoadGenerator(LoadGenerator):
    """A :class:`LoadGenerator` whose workers run whole agent sessions, not single calls.

    The level of a step is the number of sessions kept open. Model calls are recorded like
    any sweep's requests (latency, TTFT, retries, Little's law); sessions are recorded
    beside them, so a step reports both sessions and model calls in flight.
    """

    def __init__(self, *, sessions: SessionWorkload | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sessions = sessions or SessionWorkload()
        self._session_records: list[SessionRecord] = []

    async def _worker(self, rng: random.Random, stop: asyncio.Event, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        while not stop.is_set():
            await self._session(rng)

    async def _session(self, rng: random.Random) -> None:
        spec = self.sessions
        rec = SessionRecord(start=time.monotonic())
        self._session_records.append(rec)
        try:
            turns = spec.turns.sample(rng)
            messages = [{"role": "user", "content": _words(spec.prompt_tokens.sample(rng))}]
            for turn in range(turns):
                max_tokens = spec.output_tokens.sample(rng)
                call = await self._one(rng, messages=messages, max_tokens=max_tokens,
                                       stream=spec.stream)
                rec.calls += 1
                rec.ok = rec.ok and call.ok
                # The reply joins the conversation, so the next prompt is longer.
                messages = [*messages, {"role": "assistant",
                                        "content": _words(call.output_tokens or max_tokens)}]
                if spec.tool_probability and rng.random() < spec.tool_probability:
                    await asyncio.sleep(spec.tool_s.sample(rng))
                    messages.append({"role": "tool", "content": "result"})
                if turn < turns - 1:
                    await asyncio.sleep(spec.think_s.sample(rng))
                    messages.append({"role": "user",
                                     "content": _words(spec.turn_tokens.sample(rng))})
        finally:
            rec.end = time.monotonic()
            rec.done = True

    def _begin_step(self) -> None:
        super()._begin_step()
        self._session_records = [s for s in self._session_records if not s.done]

    def _min_window_s(self, plan, done: list[float]) -> float:
        finished = [s.end - s.start for s in self._session_records if s.done]
        if finished:
            return plan.min_latencies * sum(finished) / len(finished)
        return math.inf  # not one session finished yet: the window is too short

    def _summarize(self, concurrency: int, records: list[RequestRecord], t0: float, t1: float,
                   **kw) -> StepStats:
        return summarize_sessions(concurrency, records, list(self._session_records), t0, t1,
                                  spec=self.sessions, **kw)


def _words(n: int) -> str:
    return " ".join(["tok"] * max(int(n), 1))


def _mean_in_flight(intervals: list[tuple[float, float]], t0: float, t1: float) -> float:
    span = max(t1 - t0, 1e-9)
    return sum(max(0.0, min(e, t1) - max(s, t0)) for s, e in intervals) / span


def summarize_sessions(level: int, calls: list[RequestRecord], sessions: list[SessionRecord],
                       t0: float, t1: float, *, spec: SessionWorkload, **kw) -> StepStats:
    """:func:`~redline_operator.sweep.stats.summarize` for the calls, plus the session view.

    ``mean_in_flight`` stays what the server saw: model calls in flight. Sessions in flight,
    the duty cycle, session duration p95 and sessions per minute are added, all over the
    same window.
    """
    step = summarize(level, calls, t0, t1, **kw)
    spans = [(s.start, t1 if math.isnan(s.end) else s.end) for s in sessions]
    step.unit = "sessions"
    step.sessions_in_flight = _mean_in_flight(spans, t0, t1)
    step.duty_cycle = (step.mean_in_flight / step.sessions_in_flight
                       if step.sessions_in_flight else math.nan)
    step.design_duty_cycle = spec.design_duty_cycle(step.latency_mean)
    ended = [s for s in sessions if s.done and t0 <= s.end < t1]
    step.session_p95 = percentile([s.end - s.start for s in ended if s.ok], 95)
    step.sessions_per_min = 60.0 * len([s for s in ended if s.ok]) / max(t1 - t0, 1e-9)
    step.session_success_rate = (sum(s.ok for s in ended) / len(ended)) if ended else math.nan
    return step
