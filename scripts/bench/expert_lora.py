"""Benchmark: LoRA on one gpt-oss expert layer, PEFT's stacked delta against ossft's routed one.

One mixture-of-experts block (router and experts) at the real gpt-oss dimensions, random weights, LoRA
on gate_up_proj and down_proj, random hidden states of --tokens tokens. Each way runs in a fresh
process (so peak memory is its own): forward and backward, --repeat times after one warm-up.

- stacked: PEFT target_parameters as it is, experts through transformers' grouped_mm; every forward
  adds s·A·B to the whole [experts, in, out] stack and the backward computes that stack's gradient.
- routed: the same PEFT model after ossft.model.expert_lora.use_routed_expert_lora: (x·A)·B per routed token.

Reported: seconds per forward+backward (median), the peak memory it added over the loaded layer (CPU:
getrusage max RSS; CUDA: max_memory_allocated), and the largest difference between the two ways in the
layer's output and in every LoRA gradient (same seed, same weights, same input).

    python scripts/bench/expert_lora.py --tokens 512 --markdown BENCHMARKS.md            # CPU, float32
    python scripts/bench/expert_lora.py --tokens 8192 --dtype bfloat16 --markdown BENCHMARKS.md   # GPU
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from two_ways import Comparison, add_common_arguments, largest_relative_difference, measure_step, save_result  # noqa: E402

WAYS = ("stacked", "routed")
SHAPES = {"20b": 32, "120b": 128}  # experts per layer; hidden and intermediate are 2880 in both


def build_layer(args, device: str):
    """A module holding `mlp` (router + experts), so PEFT's target names are the real ones."""
    import torch
    from transformers import GptOssConfig
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP

    config = GptOssConfig(
        hidden_size=args.hidden,
        intermediate_size=args.hidden,
        num_local_experts=args.experts,
        num_experts_per_tok=4,
        num_hidden_layers=1,
        vocab_size=8,
    )
    config._experts_implementation = "grouped_mm"  # transformers 5's default, the fair baseline

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = GptOssMLP(config)

        def forward(self, hidden_states):
            return self.mlp(hidden_states)[0]

    torch.manual_seed(0)
    block = Block().to(device=device, dtype=getattr(torch, args.dtype))
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.normal_(0, 0.02)
    return block


def lora_block(args, way: str, device: str):
    import torch
    from peft import LoraConfig, get_peft_model

    from ossft.model.expert_lora import use_routed_expert_lora

    config = LoraConfig(
        r=args.r, lora_alpha=2 * args.r, target_modules=[], target_parameters=["gate_up_proj", "down_proj"]
    )
    model = get_peft_model(build_layer(args, device), config)
    with torch.no_grad():  # B starts at zero; a random B makes the delta count in the comparison
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    if way == "routed":
        assert use_routed_expert_lora(model) == 1
    return model


def worker(args) -> int:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = lora_block(args, args.worker, device)
    generator = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(1, args.tokens, args.hidden, generator=generator, device=device).to(getattr(torch, args.dtype))
    x.requires_grad_(True)

    def step():
        model.zero_grad(set_to_none=True)
        out = model(x)
        out.float().pow(2).mean().backward()
        return out

    measured, out = measure_step(step, device, args.repeat)
    grads = {n: p.grad.float().cpu() for n, p in model.named_parameters() if p.requires_grad}
    return save_result(measured, {"out": out.detach().float().cpu(), "grads": grads}, args.result)


def worker_arguments(args) -> list[str]:
    return [
        *("--tokens", str(args.tokens), "--experts", str(args.experts), "--hidden", str(args.hidden)),
        *("--r", str(args.r), "--repeat", str(args.repeat), "--dtype", args.dtype),
    ]


def differences(stacked: dict, routed: dict) -> dict:
    return {
        "output": largest_relative_difference({"out": stacked["out"]}, {"out": routed["out"]}),
        "grads": largest_relative_difference(stacked["grads"], routed["grads"]),
    }


def details(args) -> list[str]:
    return [
        f"- layer: {args.experts} experts, hidden = intermediate = {args.hidden}, top-4, LoRA r={args.r} on "
        f"gate_up_proj and down_proj, {args.tokens} tokens, {args.dtype}; forward + backward, median of "
        f"{args.repeat} after a warm-up; each way in its own process"
    ]


def difference_note(diff: dict) -> str:
    return (
        f"- largest difference relative to the largest value: output {diff['output']:.1e}, "
        f"LoRA gradients {diff['grads']:.1e} (summation order only: tests/test_expert_lora.py finds them "
        "equal to 1e-12 in float64)"
    )


COMPARISON = Comparison(
    script=__file__,
    title="Expert LoRA: PEFT's stacked delta against the routed one, one layer",
    ways=WAYS,
    packages=("torch", "transformers", "peft"),
    worker=worker,
    worker_arguments=worker_arguments,
    differences=differences,
    details=details,
    difference_note=difference_note,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="20b", help="sets --experts")
    parser.add_argument("--experts", type=int, default=None)
    parser.add_argument("--hidden", type=int, default=2880)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    add_common_arguments(parser, WAYS)
    args = parser.parse_args(argv)
    args.experts = args.experts or SHAPES[args.shape]
    return args


def main(argv: list[str] | None = None) -> int:
    return COMPARISON.run(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
