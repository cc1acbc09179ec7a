"""Benchmark: the loss over gpt-oss's 201,088-token vocabulary, full logits against TRL's fused LM head.

A real GptOssForCausalLM with the real vocabulary and a small body (--hidden, one layer), random
weights, LoRA-like training: the embeddings and the LM head frozen, the layer trained. Each way runs
in a fresh process (so peak memory is its own): forward and backward of the loss, --repeat times after
one warm-up.

- full: the model's own forward with labels, as transformers (and TRL before its fused head) computes
  it: the [tokens, vocabulary] logits, their log-softmax and its gradient.
- fused: the forward TRL's SFTTrainer installs (`trl.trainer.utils.add_fused_lm_head`) and ossft's
  trainer calls: logits one tile at a time, folded into running log-sum-exp statistics.

Reported: seconds per step (median), the peak memory it added over the loaded model (CPU: getrusage
max RSS; CUDA: max_memory_allocated), and the largest differences between the two ways in the loss and
in the trained parameters' gradients.

    python scripts/bench/lm_head.py --tokens 2048 --markdown BENCHMARKS.md                # CPU, float32
    python scripts/bench/lm_head.py --hidden 2880 --tokens 16384 --dtype bfloat16 --markdown BENCHMARKS.md  # GPU
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from two_ways import Comparison, add_common_arguments, largest_relative_difference, measure_step, save_result  # noqa: E402

WAYS = ("full", "fused")
GPT_OSS_VOCAB = 201_088
PROMPT_SHARE = 0.25  # the first quarter of the sequence is prompt: label -100, as harmony masking leaves it


def build_model(args, device: str):
    import torch
    from transformers import GptOssConfig, GptOssForCausalLM

    config = GptOssConfig(
        hidden_size=args.hidden,
        intermediate_size=args.hidden,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=args.hidden // 4,
        num_local_experts=4,
        num_experts_per_tok=2,
        vocab_size=args.vocab,
        layer_types=["full_attention"],
        output_router_logits=False,  # the loss alone: the router's aux loss is the same both ways
    )
    torch.manual_seed(0)
    model = GptOssForCausalLM(config).to(device=device, dtype=getattr(torch, args.dtype))
    model.config.use_cache = False
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("model.layers."))
    return model


def batch(args, device: str) -> dict:
    import torch

    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, args.vocab, (1, args.tokens), generator=generator)
    labels = input_ids.clone()
    labels[:, : int(args.tokens * PROMPT_SHARE)] = -100
    return {"input_ids": input_ids.to(device), "labels": labels.to(device)}


def worker(args) -> int:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_model(args, device)
    if args.worker == "fused":
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # SFTTrainer's metrics too
    inputs = batch(args, device)
    extra = {"fused_lm_head": True} if args.worker == "fused" else {}

    def step():
        model.zero_grad(set_to_none=True)
        loss = model(**inputs, **extra).loss
        loss.backward()
        return loss

    measured, loss = measure_step(step, device, args.repeat)
    grads = {n: p.grad.float().cpu() for n, p in model.named_parameters() if p.grad is not None}
    return save_result(measured, {"loss": loss.item(), "grads": grads}, args.result)


def worker_arguments(args) -> list[str]:
    return [
        *("--tokens", str(args.tokens), "--hidden", str(args.hidden), "--vocab", str(args.vocab)),
        *("--repeat", str(args.repeat), "--dtype", args.dtype),
    ]


def differences(full: dict, fused: dict) -> dict:
    return {
        "loss": abs(full["loss"] - fused["loss"]) / abs(full["loss"]),
        "grads": largest_relative_difference(full["grads"], fused["grads"]),
        "trained": len(full["grads"]),
    }


def details(args) -> list[str]:
    logits = args.tokens * args.vocab * {"float32": 4, "bfloat16": 2}[args.dtype]
    return [
        f"- model: GptOssForCausalLM, vocabulary {args.vocab:,}, hidden {args.hidden}, one layer, {args.dtype}; "
        f"{args.tokens:,} tokens, the first {PROMPT_SHARE:.0%} prompt (label -100); embeddings and LM head "
        f"frozen; forward + backward, median of {args.repeat} after a warm-up; each way in its own process",
        f"- one copy of the logits would be {logits / 2**20:,.0f} MiB",
    ]


def difference_note(diff: dict) -> str:
    return (
        f"- largest difference relative to the largest value: loss {diff['loss']:.1e}, gradients of the "
        f"{diff['trained']} trained tensors {diff['grads']:.1e}"
    )


COMPARISON = Comparison(
    script=__file__,
    title="Loss over the vocabulary: full logits against TRL's fused LM head",
    ways=WAYS,
    packages=("torch", "transformers", "trl"),
    worker=worker,
    worker_arguments=worker_arguments,
    differences=differences,
    details=details,
    difference_note=difference_note,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=256, help="the logits' size does not depend on it")
    parser.add_argument("--vocab", type=int, default=GPT_OSS_VOCAB)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    add_common_arguments(parser, WAYS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return COMPARISON.run(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
