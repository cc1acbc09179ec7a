"""Benchmark: LoRA training throughput and memory on the gpt-oss-20b shape, ossft against the cookbook.

No weights can be downloaded where the GPUs are, so the model is built from the released 20b shape
(ossft.gptoss.facts.PUBLISHED) with random bf16 weights, directly on the device. The data are random token
sequences of exactly --seq tokens, every token trained, so tokens per second mean the same on both
sides. Two configurations run one after the other in this process, each with a fresh model:

- cookbook: the OpenAI cookbook's "fine-tune gpt-oss with transformers" settings: eager attention,
  LoRA r=8 / alpha 16 on the attention projections (what all-linear selects) and the experts of
  layers 7, 15 and 23, gradient checkpointing, AdamW, the micro-batch given here;
- ossft: the same LoRA built by ossft (ossft.model.load.apply_lora) and trained through ossft's
  SFTConfig (ossft.train.config.sft_config) and MeteredSFTTrainer, with ossft's defaults for the rest.

Reported per configuration: tokens/s over the steady steps (after the first --warmup), peak reserved
and allocated memory, and MFU = 6 * N_active * tokens/s / peak bf16 FLOP/s, where N_active counts the
parameters one token goes through (attention, router, top-4 of the experts, embeddings excluded), the
usual 2N forward + 4N backward; --peak-tflops sets the device's peak (H100 SXM dense bf16: 989).

--longest finds the longest sequence ossft's configuration trains at micro-batch 1 instead: each
length in a fresh process (an out-of-memory leaves the allocator in no state to go on), doubling from
--seq until one runs out of memory, then halving the gap down to --resolution tokens (1024). --attn picks ossft's
attention kernel (eager keeps the sinks exact everywhere; flex_attention on a GPU too, without the
[heads, seq, seq] scores), --memory-limit GiB caps the process (an 80 GB card on a 141 GB H200).

On CPU with --shape tiny the same code runs end to end in seconds (tests/test_bench_gpu_lora.py).

    python scripts/bench/gpu_lora.py --shape 20b --seq 2048 --micro-batch 4 --steps 12 --markdown BENCHMARKS.md
    python scripts/bench/gpu_lora.py --shape 20b --longest --seq 8192 --attn flex_attention --memory-limit 80 --markdown BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

TINY = {"layers": 2, "experts": 4, "top_k": 2, "hidden": 64, "intermediate": 64, "heads": 4, "kv_heads": 2}
TINY.update({"head_dim": 16, "vocab": 1045})
COOKBOOK_EXPERT_LAYERS = [7, 15, 23]


def shape_of(name: str):
    from ossft.gptoss.facts import PUBLISHED, SHARED, Shape

    return Shape(**TINY) if name == "tiny" else Shape(**PUBLISHED[f"openai/gpt-oss-{name}"], **SHARED)


def random_model(shape, device: str, dtype, attn: str = "eager"):
    import torch
    from transformers import GptOssConfig, GptOssForCausalLM

    config = GptOssConfig(
        num_hidden_layers=shape.layers,
        num_local_experts=shape.experts,
        num_experts_per_tok=shape.top_k,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim,
        vocab_size=shape.vocab,
        layer_types=["sliding_attention", "full_attention"] * (shape.layers // 2),
        use_cache=False,
    )
    config._attn_implementation = attn
    with torch.device(device):
        model = GptOssForCausalLM(config).to(dtype)
    return model


def random_dataset(vocab: int, seq: int, rows: int, seed: int = 0):
    import torch
    from datasets import Dataset

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, seq), generator=generator).tolist()
    return Dataset.from_dict({"input_ids": ids, "completion_mask": [[1] * seq for _ in range(rows)]})


def padding_tokenizer(folder: Path):
    """A tokenizer for the trainers' collators (pad and eos ids only: the sequences are all --seq long
    and already ids). The tiny model's, made offline; nothing is downloaded where the GPUs are."""
    from transformers import AutoTokenizer

    from ossft.model.tiny import write_tiny_model

    path = folder / "tokenizer"
    if not (path / "tokenizer.json").is_file():
        write_tiny_model(path)
    return AutoTokenizer.from_pretrained(path)


def recipe_for(args, out: Path, expert_layers):
    from ossft.recipe.load import load_recipe

    experts = "[" + ",".join(map(str, expert_layers)) + "]"
    overrides = [
        f"output.dir={out}",
        f"lora.experts={experts}",
        f"train.max_steps={args.steps}",
        f"train.max_length={args.seq}",
        f"train.per_device_train_batch_size={args.micro_batch}",
        "train.gradient_accumulation_steps=1",
        "train.save_strategy=no",
        f"train.logging_steps={args.steps}",
        "train.activation_checkpointing=true",
    ]
    return load_recipe(REPO / "recipes" / "quickstart.yaml", overrides)


def train_and_time(trainer, warmup: int) -> tuple[float, list[float]]:
    import torch
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.started)

    clock = Clock()
    trainer.add_callback(clock)
    trainer.train()
    steady = clock.times[warmup:]
    return sum(steady) / len(steady), clock.times


def run_config(name: str, args, shape, device: str) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from ossft.model.load import apply_lora
    from ossft.train.config import sft_config
    from ossft.train.meter import MeteredSFTTrainer

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    expert_layers = (
        [i * shape.layers // 24 for i in COOKBOOK_EXPERT_LAYERS] if shape.layers < 24 else COOKBOOK_EXPERT_LAYERS
    )
    expert_layers = sorted(set(min(i, shape.layers - 1) for i in expert_layers))
    out = Path(args.out) / name
    recipe = recipe_for(args, out, expert_layers)
    data = random_dataset(shape.vocab, args.seq, args.steps * args.micro_batch)
    tokenizer = padding_tokenizer(Path(args.out))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    set_seed(0)
    model = random_model(shape, device, dtype, "eager" if name == "cookbook" else args.attn)
    if name == "cookbook":
        targets = [f"{i}.mlp.experts.{p}" for i in expert_layers for p in ("gate_up_proj", "down_proj")]
        lora = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", target_parameters=targets)
        config = SFTConfig(
            output_dir=str(out),
            max_steps=args.steps,
            per_device_train_batch_size=args.micro_batch,
            gradient_checkpointing=True,
            learning_rate=2e-4,
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": 0.1},
            max_length=args.seq,
            save_strategy="no",
            report_to="none",
            bf16=device == "cuda",
            logging_steps=args.steps,
        )
        trainer = SFTTrainer(
            model=get_peft_model(model, lora), args=config, train_dataset=data, processing_class=tokenizer
        )
    else:
        config = sft_config(recipe)
        trainer = MeteredSFTTrainer(
            model=apply_lora(model, recipe), args=config, train_dataset=data, processing_class=tokenizer
        )
    seconds, _ = train_and_time(trainer, args.warmup)
    tokens_per_second = args.seq * args.micro_batch / seconds
    result = {"config": name, "tokens_per_second": tokens_per_second, "step_seconds": seconds}
    if torch.cuda.is_available():
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        result["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    active = shape.layers * (
        shape.attention_params + shape.hidden * shape.experts + shape.expert_params * shape.top_k // shape.experts
    )
    result["mfu"] = 6 * active * tokens_per_second / (args.peak_tflops * 1e12)
    del trainer, model
    return result


def limit_memory(gib: float | None) -> None:
    """Let this run allocate at most `gib`: of device memory (CUDA's caching allocator), or of address
    space beyond what the process has mapped already (CPU: the libraries' own mappings are large and
    vary), so that the longest sequence found is the one a smaller device would train."""
    import resource

    import torch

    if gib is None:
        return
    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, gib * 2**30 / total))
    else:
        mapped = int(Path("/proc/self/status").read_text().split("VmSize:")[1].split()[0]) * 1024
        limit = mapped + int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    # CUDA raises torch.OutOfMemoryError; the CPU allocator a RuntimeError, and Python a MemoryError.
    text = str(error)
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in text


def probe_once(args, shape, device: str) -> dict:
    """One training run of ossft's configuration at --seq, micro-batch 1: its peak, or that it ran out."""
    limit_memory(args.memory_limit)
    args.micro_batch, args.steps, args.warmup = 1, 2, 1
    try:
        result = run_config("ossft", args, shape, device)
    except Exception as error:  # noqa: BLE001 - anything but an out-of-memory is re-raised
        if not is_out_of_memory(error):
            raise
        return {"seq": args.seq, "fits": False}
    return {"seq": args.seq, "fits": True, **result}


def probe(args, seq: int) -> dict:
    command = [sys.executable, __file__, "--probe-one", *args.argv, "--seq", str(seq)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the run at seq {seq} failed:\n{done.stderr[-3000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  seq {seq}: {'trains' if found['fits'] else 'out of memory'}", file=sys.stderr)
    return found


def longest_sequence(args) -> tuple[dict | None, list[dict]]:
    """The longest run that trained, by ossft.launch.memory's search (doubling from --seq, then bisecting down to
    --resolution, never past --max-seq), and every attempt."""
    from ossft.launch.memory import longest_passing

    attempts = []

    def trains(seq: int) -> bool:
        attempts.append(probe(args, seq))
        return attempts[-1]["fits"]

    longest = longest_passing(trains, start=args.seq, step=args.resolution, cap=args.max_seq)
    return next((a for a in attempts if a["seq"] == longest and a["fits"]), None), attempts


def longest_report(best: dict | None, attempts: list[dict], args, device: str) -> str:
    tried = ", ".join(f"{a['seq']} {'ok' if a['fits'] else 'OOM'}" for a in sorted(attempts, key=lambda a: a["seq"]))
    limit = f"capped at {args.memory_limit:g} GiB" if args.memory_limit else "the whole device"
    lines = [
        f"## Longest sequence, LoRA on the gpt-oss-{args.shape} shape ({datetime.date.today().isoformat()})",
        "",
        f"- Device: {device_name(device)}, {limit}; {versions()}.",
        f"- Command: `python scripts/bench/gpu_lora.py {' '.join(args.argv)}`",
        f"- ossft's configuration, attention {args.attn}, micro-batch 1, 2 steps per length, each length in a "
        "fresh process; random bf16 weights, random tokens, every token trained.",
        f"- Tried: {tried}.",
        "",
    ]
    if best is None:
        lines.append(f"Not even {args.seq:,} tokens trained.")
    else:
        reserved = best.get("peak_reserved_gib", float("nan"))
        capped = (
            "" if any(not a["fits"] for a in attempts) else f" (no length up to --max-seq {args.max_seq:,} ran out)"
        )
        lines.append(f"Longest: **{best['seq']:,} tokens**{capped}, peak reserved {reserved:.1f} GiB.")
    return "\n".join(lines + [""])


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
    lines = [
        f"## LoRA on the gpt-oss-{args.shape} shape: ossft against the cookbook ({datetime.date.today().isoformat()})",
        "",
        f"- Device: {device_name(device)}; {versions()}.",
        f"- Command: `python scripts/bench/gpu_lora.py {' '.join(args.argv)}`",
        f"- seq {args.seq}, micro-batch {args.micro_batch}, {args.steps} steps (first {args.warmup} left out), "
        f"random bf16 weights, random tokens; MFU = 6 N_active tokens/s / {args.peak_tflops:g} TFLOP/s.",
        "",
        "| config | tokens/s | peak reserved GiB | peak allocated GiB | MFU |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['config']} | {r['tokens_per_second']:,.0f} | {r.get('peak_reserved_gib', float('nan')):.1f} | "
            f"{r.get('peak_allocated_gib', float('nan')):.1f} | {100 * r['mfu']:.2f}% |"
        )
    by = {r["config"]: r for r in results}
    lines += [
        "",
        f"ossft / cookbook tokens/s: **{by['ossft']['tokens_per_second'] / by['cookbook']['tokens_per_second']:.2f}**",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=("tiny", "20b", "120b"), default="20b")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--out", default="/tmp/ossft-bench-gpu")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--attn", choices=("eager", "flex_attention"), default="eager", help="ossft's attention")
    parser.add_argument("--longest", action="store_true", help="find the longest sequence ossft trains")
    parser.add_argument("--max-seq", type=int, default=131_072, help="--longest stops doubling here")
    parser.add_argument("--resolution", type=int, default=1024, help="--longest bisects down to this many tokens")
    parser.add_argument("--memory-limit", type=float, help="GiB this process may use (--longest)")
    parser.add_argument("--probe-one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.steps <= args.warmup:
        parser.error("--steps must be more than --warmup")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and args.shape != "tiny":
        print("no GPU here: only --shape tiny runs on CPU", file=sys.stderr)
        return 2
    shape = shape_of(args.shape)
    if args.probe_one:
        print(json.dumps(probe_once(args, shape, device)))
        return 0
    if args.longest:
        best, attempts = longest_sequence(args)
        section = longest_report(best, attempts, args, device)
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
