"""Benchmark: LoRA training throughput and memory on the gpt-oss-20b shape, ossft against the cookbook.

No weights can be downloaded where the GPUs are, so the model is built from the released 20b shape
(ossft.gptoss.facts.PUBLISHED; --layers keeps fewer of its layers) with random bf16 weights, directly
on the device. The data are random token sequences of exactly --seq tokens, every token trained, so
tokens per second mean the same on both sides. Two configurations run one after the other in this
process, each with a fresh model:

- cookbook: the OpenAI cookbook's "fine-tune gpt-oss with transformers" settings: eager attention,
  LoRA r=8 / alpha 16 on the attention projections (what all-linear selects) and the experts of
  layers 7, 15 and 23, gradient checkpointing, AdamW, the micro-batch given here;
- ossft: the same LoRA built by ossft (ossft.model.load.apply_lora) and trained through ossft's
  SFTConfig (ossft.train.config.sft_config) and MeteredSFTTrainer, with ossft's defaults for the rest,
  attention --attn with ossft's document masks (what ossft.model.load.load_model installs).

--packing: examples of seq/2, seq/4, seq/8 and seq/8 tokens instead, four per --seq; the cookbook pads
micro-batches of 4 x --micro-batch examples, ossft packs them (TRL's BFD, padding-free) into rows of
exactly --seq. Both train the same real tokens; tokens/s counts real tokens only, never padding.

Reported per configuration: tokens/s over the steady steps (after the first --warmup), peak reserved
and allocated memory, and MFU = 6 * N_active * tokens/s / peak bf16 FLOP/s, where N_active counts the
parameters one token goes through (attention, router, top-4 of the experts, embeddings excluded), the
usual 2N forward + 4N backward; --peak-tflops sets the device's peak (H100 SXM dense bf16: 989).

--longest finds the longest sequence ossft's configuration trains at micro-batch 1 instead
(gpu_lora_longest.py): each length in a fresh process, doubling from --seq until one runs out of
memory, then halving the gap down to --resolution tokens (1024), stopping early at --time-box seconds.
--attn picks ossft's attention (eager, or ossft_flex: the sinks exact without the [heads, seq, seq]
scores), --memory-limit GiB caps the process (an 80 GB card on an H200).
--mxfp4-experts: ossft keeps its frozen experts as MXFP4 buffers, dequantized just in time (ossft/model/
mxfp4_experts.py), its random experts first rounded to what MXFP4 holds, as a checkpoint's; peak memory
counts from after the bf16 experts are packed and freed: training's peak, not the model's construction.

On CPU with --shape tiny the same code runs end to end in seconds (tests/test_bench_gpu_lora.py);
ossft_flex there needs --cpu-flex-backward (flex's unfused reference path: no GPU numbers).

    python scripts/bench/gpu_lora.py --shape 20b --seq 2048 --micro-batch 4 --steps 12 --markdown BENCHMARKS.md
    python scripts/bench/gpu_lora.py --shape 20b --seq 4096 --packing --attn ossft_flex --markdown BENCHMARKS.md
    python scripts/bench/gpu_lora.py --shape 20b --longest --seq 8192 --attn ossft_flex --memory-limit 80 --markdown BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import time
from collections import defaultdict, deque
from pathlib import Path

from gpu_lora_longest import longest_report, longest_sequence, probe_once

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

TINY = {"layers": 2, "experts": 4, "top_k": 2, "hidden": 64, "intermediate": 64, "heads": 4, "kv_heads": 2}
TINY.update({"head_dim": 16, "vocab": 1045})
COOKBOOK_EXPERT_LAYERS = [7, 15, 23]
EXAMPLES_PER_ROW = 4  # --packing: seq/2 + seq/4 + seq/8 + seq/8 tokens fill one row exactly
FLEX = "ossft_flex"


def shape_of(name: str, layers: int | None = None):
    from ossft.gptoss.facts import PUBLISHED, SHARED, Shape

    shape = Shape(**TINY) if name == "tiny" else Shape(**PUBLISHED[f"openai/gpt-oss-{name}"], **SHARED)
    return shape if layers is None else dataclasses.replace(shape, layers=layers)


def random_model(shape, device: str, dtype, attn: str = "eager", document_masks: bool = False):
    import torch
    from transformers import GptOssConfig, GptOssForCausalLM

    from ossft.model.documents import use_document_masks
    from ossft.model.sink_attention import register

    if attn == FLEX:
        register()  # the config below names it, and transformers checks the name on construction
    config = GptOssConfig(
        num_hidden_layers=shape.layers, num_local_experts=shape.experts, num_experts_per_tok=shape.top_k,
        hidden_size=shape.hidden, intermediate_size=shape.intermediate, num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads, head_dim=shape.head_dim, vocab_size=shape.vocab,
        layer_types=["sliding_attention", "full_attention"] * (shape.layers // 2), use_cache=False,
    )  # fmt: skip
    config._attn_implementation = attn
    # Built in `dtype` from the start: an fp32 model cast afterwards would hold both copies at once, in
    # the peak memory measured below (and a whole 20b in fp32 is 84 GB, more than an H100 has).
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = GptOssForCausalLM(config).to(dtype)
    finally:
        torch.set_default_dtype(default_dtype)
    if document_masks:
        use_document_masks(model)  # as load_model: packed documents attend only within themselves
    return model


def round_experts_to_mxfp4(model) -> None:
    """Experts rounded to what MXFP4 holds (all keep_experts_in_mxfp4 takes), a weight at a time to bound memory."""
    import torch
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts

    from ossft.gptoss.facts import EXPERT_PROJECTIONS
    from ossft.gptoss.mxfp4 import pack, unpack

    with torch.no_grad():
        for experts in (m for m in model.modules() if isinstance(m, GptOssExperts)):
            for weight in (getattr(experts, name) for name in EXPERT_PROJECTIONS):
                weight.copy_(unpack(*pack(weight), dtype=weight.dtype))


def allow_flex_backward_on_cpu() -> None:
    """torch refuses flex's backward on CPU (flex_attention._validate_device, "TODO: Remove once non
    cuda/cpu devices support is added"). Lifted, the backward runs flex's unfused reference path, the
    math the compiled kernel fuses, as tests/test_attention.py does: for CPU dry runs, never numbers."""
    import warnings

    import torch.nn.attention.flex_attention as flex

    flex._validate_device = lambda *tensors: None
    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")


def random_dataset(vocab: int, lengths: list[int], seed: int = 0):
    import torch
    from datasets import Dataset

    generator = torch.Generator().manual_seed(seed)
    ids = [torch.randint(0, vocab, (n,), generator=generator).tolist() for n in lengths]
    return Dataset.from_dict({"input_ids": ids, "completion_mask": [[1] * n for n in lengths]})


def example_lengths(seq: int, rows: int, varied: bool) -> list[int]:
    if not varied:
        return [seq] * rows
    return [seq // 2, seq // 4, seq // 8, seq - seq // 2 - seq // 4 - seq // 8] * rows


def padding_tokenizer(folder: Path):
    """A tokenizer for the trainers' collators (pad and eos ids only: the sequences are already ids).
    The tiny model's, made offline; nothing is downloaded where the GPUs are."""
    from transformers import AutoTokenizer

    from ossft.model.tiny import write_tiny_model

    path = folder / "tokenizer"
    if not (path / "tokenizer.json").is_file():
        write_tiny_model(path)
    return AutoTokenizer.from_pretrained(path)


def expert_layers_of(shape) -> list[int]:
    """The cookbook's expert layers (7, 15, 23 of 24), at the same depths of a shallower model."""
    layers = COOKBOOK_EXPERT_LAYERS
    if shape.layers < 24:
        layers = [i * shape.layers // 24 for i in COOKBOOK_EXPERT_LAYERS]
    return sorted(set(min(i, shape.layers - 1) for i in layers))


def ossft_recipe(args, shape, out: Path, attn: str, packed: bool, micro_batch: int, device: str):
    from ossft.recipe.load import load_recipe
    from ossft.train.config import LENGTH_BUCKET

    overrides = [
        f"output.dir={out}",
        f"lora.experts=[{','.join(map(str, expert_layers_of(shape)))}]",
        f"train.max_steps={args.steps}",
        f"train.max_length={args.seq}",
        f"train.per_device_train_batch_size={micro_batch}",
        "train.gradient_accumulation_steps=1",
        "train.save_strategy=no",
        f"train.logging_steps={args.steps}",
        "train.activation_checkpointing=true",
    ]
    if device == "cuda":
        overrides += [f"model.attn_implementation={attn}", "model.dtype=bfloat16"]
    elif attn == FLEX:
        # sft_config refuses ossft_flex without a GPU before it would add this; the model is built
        # here, so the recipe says eager and the length bucket comes in by hand.
        overrides.append(f"train.pad_to_multiple_of={LENGTH_BUCKET}")
    if packed:
        overrides.append("train.packing=true")
    return load_recipe(REPO / "recipes" / "quickstart.yaml", overrides)


@dataclasses.dataclass
class Steps:
    seconds: list[float]
    real_tokens: list[int]  # the examples' own tokens, however padded or packed
    computed_tokens: list[int]  # what the model ran over, padding included


def train_and_time(trainer) -> Steps:
    """Train, timing each optimizer step and counting its tokens. Real tokens are counted where the
    collator sees the examples and credited to the step that trains that batch (the dataloader may
    collate a batch ahead: a queue keeps them in order)."""
    import torch
    from transformers import TrainerCallback

    times: list[float] = []
    real, computed = defaultdict(int), defaultdict(int)
    collated: deque[int] = deque()
    collate, step = trainer.data_collator, trainer.training_step

    def counting_collator(examples):
        collated.append(sum(len(e["input_ids"]) for e in examples))
        return collate(examples)

    def counted_step(model, inputs, *rest, **kwargs):
        real[trainer.state.global_step] += collated.popleft()
        computed[trainer.state.global_step] += inputs["input_ids"].numel()
        return step(model, inputs, *rest, **kwargs)

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.started)

    trainer.data_collator, trainer.training_step = counting_collator, counted_step
    trainer.add_callback(Clock())
    trainer.train()
    steps = range(len(times))
    return Steps(times, [real[i] for i in steps], [computed[i] for i in steps])


def active_params(shape) -> int:
    """Parameters one token goes through: attention, router, top-k of the experts (no embeddings)."""
    per_layer = shape.attention_params + shape.hidden * shape.experts
    return shape.layers * (per_layer + shape.expert_params * shape.top_k // shape.experts)


def run_config(name: str, args, shape, device: str, attn: str | None = None, packing: bool | None = None) -> dict:
    """Train one configuration; ossft's with --attn and --packing unless `attn` / `packing` say otherwise."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from ossft.model.load import apply_lora
    from ossft.model.mxfp4_experts import keep_experts_in_mxfp4
    from ossft.train.config import sft_config
    from ossft.train.meter import MeteredSFTTrainer

    cookbook = name == "cookbook"
    attn = "eager" if cookbook else attn or args.attn
    packed = not cookbook and (args.packing if packing is None else packing)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    out = Path(args.out) / f"{name}-{attn}-{'packed' if packed else 'padded'}"
    data = random_dataset(shape.vocab, example_lengths(args.seq, args.steps * args.micro_batch, args.packing))
    micro_batch = args.micro_batch * (EXAMPLES_PER_ROW if args.packing and not packed else 1)
    tokenizer = padding_tokenizer(Path(args.out))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    set_seed(0)
    model = random_model(shape, device, dtype, attn, document_masks=not cookbook)
    mxfp4 = not cookbook and args.mxfp4_experts
    if mxfp4:
        round_experts_to_mxfp4(model)  # before LoRA, which sizes and casts its factors from these weights
    if cookbook:
        targets = [f"{i}.mlp.experts.{p}" for i in expert_layers_of(shape) for p in ("gate_up_proj", "down_proj")]
        lora = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", target_parameters=targets)
        config = SFTConfig(
            output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=micro_batch,
            gradient_checkpointing=True, learning_rate=2e-4, lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": 0.1}, max_length=args.seq, save_strategy="no", report_to="none",
            bf16=device == "cuda", logging_steps=args.steps,
        )  # fmt: skip
        trainer = SFTTrainer(
            model=get_peft_model(model, lora), args=config, train_dataset=data, processing_class=tokenizer
        )
    else:
        recipe = ossft_recipe(args, shape, out, attn, packed, micro_batch, device)
        model = apply_lora(model, recipe)
        if mxfp4:
            keep_experts_in_mxfp4(model)  # after LoRA, as ossft.model.load.keep_frozen_experts_in_mxfp4
            if torch.cuda.is_available():  # the bf16 experts are gone: the peak from here is training's own
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
        trainer = MeteredSFTTrainer(
            model=model, args=sft_config(recipe), train_dataset=data, processing_class=tokenizer
        )
    steps = train_and_time(trainer)
    steady = slice(args.warmup, None)
    seconds = sum(steps.seconds[steady])
    tokens_per_second = sum(steps.real_tokens[steady]) / seconds
    result = {
        "config": name, "attention": attn, "packed": packed, "micro_batch": micro_batch, "mxfp4_experts": mxfp4,
        "tokens_per_second": tokens_per_second, "step_seconds": seconds / len(steps.seconds[steady]),
        "first_step_seconds": steps.seconds[0], "step_times": steps.seconds,
        "real_tokens_per_step": sum(steps.real_tokens) / len(steps.real_tokens),
        "computed_tokens_per_step": sum(steps.computed_tokens) / len(steps.computed_tokens),
    }  # fmt: skip
    if torch.cuda.is_available():
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        result["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    result["mfu"] = 6 * active_params(shape) * tokens_per_second / (args.peak_tflops * 1e12)
    del trainer, model
    return result


def device_name(device: str) -> str:
    import platform

    import torch

    return torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "CPU"


def versions() -> str:
    import torch
    import transformers
    import trl

    return f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}"


def report(results: list[dict], args, device: str) -> str:
    varied = "examples of seq/2, seq/4, seq/8, seq/8 tokens, padded by the cookbook, packed by ossft"
    data = f"{varied}; real tokens counted" if args.packing else "random tokens"
    lines = [
        f"## LoRA on the gpt-oss-{args.shape} shape: ossft against the cookbook ({datetime.date.today().isoformat()})",
        "",
        f"- Device: {device_name(device)}; {versions()}.",
        f"- Command: `python scripts/bench/gpu_lora.py {' '.join(args.argv)}`",
        f"- seq {args.seq}, micro-batch {args.micro_batch}, {args.steps} steps (first {args.warmup} left out), "
        f"random bf16 weights, {data}; MFU = 6 N_active tokens/s / {args.peak_tflops:g} TFLOP/s.",
        "",
        "| config | tokens/s | peak reserved GiB | peak allocated GiB | MFU | attention | batches |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['config']}{' (experts MXFP4)' if r.get('mxfp4_experts') else ''} | {r['tokens_per_second']:,.0f} | "
            f"{r.get('peak_reserved_gib', float('nan')):.1f} | "
            f"{r.get('peak_allocated_gib', float('nan')):.1f} | {100 * r['mfu']:.2f}% | {r['attention']} | "
            f"{'packed' if r['packed'] else 'padded'} |"
        )
    by = {r["config"]: r for r in results}
    lines += [
        "",
        f"ossft / cookbook tokens/s: **{by['ossft']['tokens_per_second'] / by['cookbook']['tokens_per_second']:.2f}**",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=("tiny", "20b", "120b"), default="20b")
    parser.add_argument("--layers", type=int, help="keep this many of the shape's layers (an even number)")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--out", default="/tmp/ossft-bench-gpu")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--attn", choices=("eager", FLEX), default="eager", help="ossft's attention")
    parser.add_argument("--packing", action="store_true", help="examples of varied lengths; ossft packs them")
    parser.add_argument("--mxfp4-experts", action="store_true", help="ossft keeps its frozen experts in MXFP4")
    parser.add_argument("--cpu-flex-backward", action="store_true", help="CPU only: let ossft_flex train there")
    parser.add_argument("--longest", action="store_true", help="find the longest sequence ossft trains")
    parser.add_argument("--max-seq", type=int, default=131_072, help="--longest stops doubling here")
    parser.add_argument("--resolution", type=int, default=1024, help="--longest bisects down to this many tokens")
    parser.add_argument("--memory-limit", type=float, help="GiB this process may use (--longest)")
    parser.add_argument("--time-box", type=float, help="seconds --longest may take; it then reports a lower bound")
    parser.add_argument("--probe-one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if args.steps <= args.warmup:
        parser.error("--steps must be more than --warmup")
    if args.layers is not None and (args.layers < 2 or args.layers % 2):
        parser.error("--layers must be even: gpt-oss alternates sliding and full attention layers")
    if args.packing and args.seq % 8:
        parser.error("--packing needs --seq divisible by 8")
    return args


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv if argv is not None else sys.argv[1:])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and args.shape != "tiny":
        print("no GPU here: only --shape tiny runs on CPU", file=sys.stderr)
        return 2
    if device == "cpu" and args.attn == FLEX and not args.cpu_flex_backward:
        print("ossft_flex trains on CPU only with --cpu-flex-backward (flex's unfused path)", file=sys.stderr)
        return 2
    if args.cpu_flex_backward and device == "cpu":
        allow_flex_backward_on_cpu()
    shape = shape_of(args.shape, args.layers)
    if args.probe_one:
        print(json.dumps(probe_once(args, shape, device, run_config)))
        return 0
    if args.longest:
        section = longest_report(longest_sequence(args), args, f"{device_name(device)}; {versions()}")
    else:
        results = [run_config(name, args, shape, device) for name in ("cookbook", "ossft")]
        section = report(results, args, device)
    print(section)
    if args.markdown:
        with args.markdown.open("a", encoding="utf-8") as f:
            f.write("\n" + section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
