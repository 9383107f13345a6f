"""The request mix a sweep replays at every level: synthetic token counts or a JSONL file.

Example::

    mix = Workload(prompt_tokens=TokenDist.parse("64-256"), output_tokens=TokenDist.parse("16"))
    messages, max_tokens = mix.sample(random.Random(0))
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TokenDist", "Workload", "parse_spread"]


def parse_spread(text: str, number, ok) -> tuple[tuple, object, object]:
    """Split ``N``, ``LO-HI`` or ``A,B,C`` into (values, low, high) with ``number`` each.

    Raises:
        ValueError: not one of those forms, ``LO > HI``, or a number fails ``ok``.
    """
    text = text.strip()
    if "-" in text.lstrip("-") and not text.startswith("-"):
        lo, hi = (number(p) for p in text.split("-", 1))
        if not (ok(lo) and ok(hi) and lo <= hi):
            raise ValueError(text)
        return (), lo, hi
    values = tuple(number(p) for p in text.split(","))
    if not values or not all(ok(v) for v in values):
        raise ValueError(text)
    return values, 0, 0


@dataclass(frozen=True)
class TokenDist:
    """A token-count distribution: ``128`` (fixed), ``64-256`` (uniform) or ``32,64,512``."""

    values: tuple[int, ...] = ()
    low: int = 0
    high: int = 0

    @classmethod
    def parse(cls, text: str) -> TokenDist:
        """Parse ``N``, ``LO-HI`` or ``A,B,C``.

        Raises:
            ValueError: the text is none of those, or a count is below 1.
        """
        try:
            values, low, high = parse_spread(text, int, lambda v: v >= 1)
        except ValueError:
            raise ValueError(f"bad token distribution {text.strip()!r}: expected N, LO-HI or "
                             "A,B,C with counts >= 1") from None
        return cls(values=values, low=low, high=high)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else (self.low + self.high) / 2

    def sample(self, rng: random.Random) -> int:
        return rng.choice(self.values) if self.values else rng.randint(self.low, self.high)


@dataclass(frozen=True)
class Workload:
    """The fixed request mix a sweep replays at every level.

    Either synthetic (prompt and output token distributions) or a JSONL mix file whose
    lines hold ``prompt`` or ``messages``, optional ``max_tokens`` and ``weight``.
    """

    prompt_tokens: TokenDist = TokenDist(values=(64,))
    output_tokens: TokenDist = TokenDist(values=(16,))
    mix: tuple[dict, ...] = ()
    weights: tuple[float, ...] = ()

    @classmethod
    def from_file(cls, path: str | Path, output_tokens: TokenDist | None = None) -> Workload:
        """Load a JSONL mix file.

        Raises:
            ValueError: the file is missing, empty, or a line is not a valid entry; the
                message names the file and the line.
        """
        path = Path(path)
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ValueError(f"{path}: cannot read mix file: {exc.strerror}") from None
        mix, weights = [], []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON: {exc.msg}") from None
            if not isinstance(entry, dict) or not ({"prompt", "messages"} & entry.keys()):
                raise ValueError(f"{path}:{n}: expected an object with 'prompt' or 'messages'")
            messages = entry.get("messages") or [{"role": "user", "content": entry["prompt"]}]
            mix.append({"messages": messages, "max_tokens": entry.get("max_tokens")})
            weights.append(float(entry.get("weight", 1.0)))
        if not mix:
            raise ValueError(f"{path}: mix file has no requests")
        return cls(output_tokens=output_tokens or cls.output_tokens, mix=tuple(mix),
                   weights=tuple(weights))

    def sample(self, rng: random.Random) -> tuple[list[dict], int]:
        """One request: (messages, max_tokens)."""
        if self.mix:
            entry = rng.choices(self.mix, self.weights)[0]
            return entry["messages"], entry["max_tokens"] or self.output_tokens.sample(rng)
        words = " ".join(["tok"] * self.prompt_tokens.sample(rng))
        return [{"role": "user", "content": words}], self.output_tokens.sample(rng)
