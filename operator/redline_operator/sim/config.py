"""The one typed configuration of the simulated inference server.

Every knob of the batching model, the fault rates and the limits lives here, so the CLI,
the Python API and the docs all speak of the same fields.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SimConfig"]


class SimConfig(BaseModel):
    """How the simulated continuous-batching server behaves.

    Timing model (see ``docs/sim.md``)::

        prefill_s(p) = prefill_base_s + prefill_per_token_s * p     # alone: TTFT at c=1
        decode_s(b)  = decode_base_s * (1 + decode_alpha * (b - 1))
        step_s       = max(prefill_base_s if any admitted, decode_s(b) if b > 0)
                       + prefill_per_token_s * sum(p of the newly admitted)

    A step is one forward pass: its fixed cost is paid once, and each prompt token
    admitted in it adds to it, delaying every decoding sequence (interference).

    Example:
        >>> cfg = SimConfig(slots=8, decode_base_s=0.005)
        >>> round(cfg.decode_s(8), 6)
        0.0057
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str = Field("sim-model", min_length=1, max_length=256,
        description="model name served and labelled")
    slots: int = Field(16, ge=1, le=100_000,
        description="max sequences decoding at once (batch size)")
    queue_limit: int = Field(1024, ge=0, le=1_000_000,
        description="max waiting requests beyond the slots")
    queue_full_retry_after_s: float = Field(
        1.0, gt=0, le=3600, description="Retry-After sent with a queue-full 429"
    )
    prefill_base_s: float = Field(0.02, ge=0, le=60, description="fixed cost of one prefill")
    prefill_per_token_s: float = Field(
        0.0002, ge=0, le=1, description="prefill cost per prompt token"
    )
    decode_base_s: float = Field(0.02, gt=0, le=60, description="one decode step at batch size 1")
    decode_alpha: float = Field(
        0.02, ge=0, le=100, description="relative slowdown of a decode step per extra sequence"
    )
    default_output_tokens: int = Field(
        64, ge=1, le=1_000_000, description="output length when the request sets no max tokens"
    )
    prompt_tokens: int | None = Field(
        None, ge=1, le=10_000_000,
        description="fixed prompt length for every request (else estimated)",
    )
    chars_per_token: float = Field(4.0, gt=0, le=1000, description="prompt-length estimate divisor")
    embedding_dim: int = Field(16, ge=1, le=65_536, description="length of embedding vectors")
    seed: int = Field(0, ge=-(2**63), le=2**63 - 1,
        description="seed of token text and random faults")
    error_rate: float = Field(0.0, ge=0, le=1, description="share of requests answered 500")
    rate_limit_rate: float = Field(0.0, ge=0, le=1, description="share answered 429")
    slow_rate: float = Field(0.0, ge=0, le=1, description="share delayed by slow_delay_s")
    slow_delay_s: float = Field(2.0, ge=0, le=3600, description="delay of a slow request")
    drop_rate: float = Field(0.0, ge=0, le=1, description="share whose stream is cut")
    log_limit: int = Field(100_000, ge=1, le=10_000_000, description="request-log records kept")

    @model_validator(mode="after")
    def _rates_fit(self) -> SimConfig:
        total = self.error_rate + self.rate_limit_rate + self.slow_rate + self.drop_rate
        if total > 1.0:
            raise ValueError(
                f"error_rate + rate_limit_rate + slow_rate + drop_rate = {total:g}; "
                "they are shares of one request stream and must sum to at most 1"
            )
        return self

    def prefill_s(self, prompt_tokens: int) -> float:
        """Seconds to prefill a prompt of ``prompt_tokens`` tokens."""
        return self.prefill_base_s + self.prefill_per_token_s * prompt_tokens

    def step_s(self, admitted_prompts: list[int], decoding: int) -> float:
        """Seconds of one engine step.

        Args:
            admitted_prompts: Prompt lengths of the sequences prefilled in this step.
            decoding: Sequences producing a decode token in this step.
        """
        fixed = max(self.prefill_base_s if admitted_prompts else 0.0,
                    self.decode_s(decoding) if decoding else 0.0)
        return fixed + self.prefill_per_token_s * sum(admitted_prompts)

    def decode_s(self, batch: int) -> float:
        """Seconds of one decode step with ``batch`` sequences decoding."""
        return self.decode_base_s * (1.0 + self.decode_alpha * (max(batch, 1) - 1))
