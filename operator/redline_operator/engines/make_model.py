"""Create the random-initialised Llama model and byte-level BPE tokenizer vLLM serves.

No weights can be downloaded here, and redline needs a model only to load the engine, not
to say anything sensible: a ~100M-parameter Llama with random weights has the compute
profile of a small real model (a 344k-parameter one is so cheap that the HTTP front end
becomes the bottleneck and there is no knee). The tokenizer is trained locally on
generated text and carries a chat template, so ``/v1/chat/completions`` works.

Runs inside the vLLM virtualenv (it needs ``torch``, ``transformers`` and ``tokenizers``,
which the dev environment does not have)::

    .cache/vllm/venv/bin/python operator/redline_operator/engines/make_model.py OUT_DIR

(run as a file: the vLLM virtualenv does not have redline installed; it imports nothing of
redline)

Deterministic (fixed seeds); writes into a temporary folder and renames it into place, so
an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

__all__ = ["MODEL_SPEC", "make_model"]

#: The architecture (recorded in the model folder's ``redline-model.json``; a change
#: makes :mod:`redline_operator.engines.vllm` rebuild the model).
MODEL_SPEC = {
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 8,
    "num_attention_heads": 16,  # head_dim 64: one the CPU attention backend supports
    "num_key_value_heads": 16,
    "max_position_embeddings": 2048,
    "vocab_size": 8192,
    "seed": 0,
}

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<s>", "</s>", "<unk>", "<pad>"]
_WORDS = [
    "the", "incident", "timeline", "service", "latency", "queue", "request",
    "token", "model", "batch", "page", "alert", "summarise", "agent", "tool",
    "call", "search", "lookup", "error", "retry", "budget", "knee", "saturation",
    "slot", "prefill", "decode", "cache", "memory", "throughput", "concurrency",
    "server", "client", "stream", "chunk", "first", "last", "window", "minute",
    "second", "percentile", "prometheus", "grafana", "collector",
]


def _corpus(n: int, rng: random.Random) -> list[str]:
    lines = []
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 24))]
        lines.append(" ".join(words) + rng.choice((".", "?", "!", ",")) + f" {rng.randint(0, 999)}")
    return lines


def _tokenizer(out: Path, vocab_size: int, seed: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_corpus(20000, random.Random(seed)), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)


def make_model(out: Path, spec: dict | None = None) -> Path:
    """Write a model folder (config, safetensors weights, tokenizer) to ``out``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = dict(MODEL_SPEC if spec is None else spec)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _tokenizer(tmp, spec["vocab_size"], spec["seed"])
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(tmp))
    torch.manual_seed(spec["seed"])
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"],
        num_key_value_heads=spec["num_key_value_heads"],
        max_position_embeddings=spec["max_position_embeddings"],
        bos_token_id=0, eos_token_id=1, pad_token_id=3, tie_word_embeddings=True,
        torch_dtype="float32")
    model = LlamaForCausalLM(config)
    model.save_pretrained(tmp, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    (tmp / "redline-model.json").write_text(
        json.dumps({"spec": spec, "parameters": params, "vocab": vocab}, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="model folder to (re)create")
    args = p.parse_args(argv)
    make_model(args.out)
    info = json.loads((args.out / "redline-model.json").read_text())
    print(f"wrote {args.out}: {info['parameters'] / 1e6:.0f}M parameters, "
          f"vocab {info['vocab']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
