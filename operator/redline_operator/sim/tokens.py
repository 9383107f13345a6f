"""Prompt-length estimation and the deterministic text the simulated model emits.

One emitted token is one word, so a stream carries exactly ``completion_tokens`` content
chunks and ``usage`` is exact by construction.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Any

__all__ = ["TEXT_KEYS", "text_of", "estimate_tokens", "TokenText"]

# Keys whose string values are prompt text in the OpenAI and Anthropic request shapes;
# role names, ids and types are structure, not prompt.
TEXT_KEYS = frozenset(
    {"content", "text", "input", "instructions", "system", "messages", "arguments", "output"}
)

_VOCAB = (
    "the", "model", "streams", "tokens", "while", "the", "batch", "grows", "and", "every",
    "queued", "request", "waits", "for", "a", "free", "slot", "so", "latency", "stays", "flat",
    "until", "saturation", "then", "the", "tail", "rises", "sharply", "because", "prefill",
    "competes", "with", "decode", "on", "one", "accelerator", "and", "the", "scheduler",
    "admits", "new", "work", "at", "each", "step", "of", "continuous", "batching",
)


def text_of(value: Any) -> str:
    """Concatenate the prompt text found in a JSON request fragment.

    Args:
        value: A string, list or mapping taken from a request body.

    Returns:
        All string leaves reached through :data:`TEXT_KEYS` (strings and lists are
        walked whole), joined by spaces.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(text_of(v) for v in value)
    if isinstance(value, dict):
        return " ".join(text_of(v) for k, v in value.items() if k in TEXT_KEYS)
    return ""


def estimate_tokens(parts: Iterable[Any], chars_per_token: float) -> int:
    """Estimate the prompt length of request fragments, at least one token.

    Args:
        parts: Request fragments (messages, system prompt, input...).
        chars_per_token: Characters counted as one token.

    Returns:
        ``ceil(characters / chars_per_token)``, never less than 1.
    """
    chars = sum(len(text_of(p)) for p in parts)
    return max(1, math.ceil(chars / chars_per_token))


class TokenText:
    """The words of one response, reproducible from the seed and the request number.

    Example:
        >>> TokenText(seed=0, number=1).word(0) == TokenText(seed=0, number=1).word(0)
        True
    """

    __slots__ = ("_rng", "_words")

    def __init__(self, seed: int, number: int) -> None:
        self._rng = random.Random(f"{seed}:{number}")
        self._words: list[str] = []

    def word(self, index: int) -> str:
        """The text of token ``index``: a word, space-prefixed after the first."""
        while len(self._words) <= index:
            self._words.append(self._rng.choice(_VOCAB))
        w = self._words[index]
        return w if index == 0 else " " + w

    def text(self, count: int) -> str:
        """The text of the first ``count`` tokens."""
        return "".join(self.word(i) for i in range(count))
