"""Benchmark: a LoRA training step's memory and time with gpt-oss's frozen experts kept in MXFP4
(`model.mxfp4_experts: true`) against the same experts dequantized to bf16 at load (`false`).

The model is gpt-oss at gpt-oss-20b's real widths (hidden = intermediate = 2880, 64 query / 8 kv heads of 64,
32 experts, top-4, the 201,088-token vocabulary, sliding window 128 on every other layer) with only --layers
layers, random weights, saved as an MXFP4 checkpoint in a temporary folder. Both modes load it through
ossft's own path (load_model, apply_lora, keep_frozen_experts_in_mxfp4) from recipes/quickstart.yaml with
bf16, eager attention and LoRA on attention and every expert layer, and train as a run does: activation
checkpointing (use_reentrant False), TRL's fused LM head, torch's AdamW on the LoRA parameters, micro-batch 1.

Each (mode, seq) runs in a fresh process. Resident memory is read from /proc/self/status: at rest after the
model is loaded and converted, then the high-water mark is reset (clear_refs 5, as attention_cpu.py does) so
the load's transients, dequantizing every expert included, do not count, and the step's peak is the new
high-water mark over the step(s). On CPU a step takes one to several minutes (most of the MXFP4 mode's in
dequantizing), so by default the one step is timed; --repeat N adds a warm-up and times the median of N.

On 2 cores the default (1,024 and 2,048 tokens) takes ~15 minutes; 4,096 adds ~10 more and peaks at ~17 GiB:
    .venv/bin/python scripts/bench/mxfp4_experts.py --markdown BENCHMARKS.md
    .venv/bin/python scripts/bench/mxfp4_experts.py --seqs 1024 2048 4096 --markdown BENCHMARKS.md
    .venv/bin/python scripts/bench/mxfp4_experts.py --tiny --seqs 64 128       # the suite's size, seconds
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_prep import append_markdown  # noqa: E402
from two_ways import bench_facts  # noqa: E402

MODES = ("bf16", "mxfp4")  # (baseline, contender): ratios are mxfp4 / bf16
GIB = 2**30
REAL = {"hidden": 2880, "heads": 64, "kv_heads": 8, "head_dim": 64, "experts": 32, "top_k": 4, "vocab": 201_088}
# Small enough for the suite, yet with experts that outweigh the RSS noise (tens of MB between the modes).
TINY = {"hidden": 512, "heads": 4, "kv_heads": 2, "head_dim": 64, "experts": 64, "top_k": 4, "vocab": 1024}
# gpt-oss-20b and 120b, for the extrapolation: (layers, experts); their widths and vocabulary are the same.
TARGETS = {"20b": (24, 32), "120b": (36, 128)}


# ---------------------------------------------------------------------------------------------
# The checkpoint and the recipe


def build_checkpoint(args, folder: Path) -> None:
    """A random gpt-oss of the chosen widths, saved as a released checkpoint is: experts as MXFP4."""
    import torch
    from transformers import AutoModelForCausalLM, GptOssConfig

    from ossft.model.tiny import save_as_mxfp4

    config = GptOssConfig(
        num_hidden_layers=args.layers,
        num_local_experts=args.experts,
        num_experts_per_tok=args.top_k,
        hidden_size=args.hidden,
        intermediate_size=args.hidden,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.head_dim,
        vocab_size=args.vocab,
        sliding_window=128,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(args.layers)],
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    # Built in bf16: in float32 the real vocabulary and experts alone would take 11 GB before the cast.
    save_as_mxfp4(AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16), folder)


def recipe_for(folder: Path, mode: str, seq: int):
    from ossft.recipe.load import load_recipe

    overrides = [
        f"model.base_model={folder}",
        "model.dtype=bfloat16",
        "model.attn_implementation=eager",
        f"model.mxfp4_experts={str(mode == 'mxfp4').lower()}",
        "lora.experts=all",
        f"train.max_length={seq}",
        "train.per_device_train_batch_size=1",
        "train.activation_checkpointing=true",
    ]
    return load_recipe(REPO / "recipes" / "quickstart.yaml", overrides)


# ---------------------------------------------------------------------------------------------
# Worker: one mode at one length, in its own process


def proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def layer_bytes(model) -> dict:
    """Bytes layer 0 holds, split by what scales with the expert count: frozen tensors as stored, and the
    trained ones four times over (the fp32 parameter, its gradient, AdamW's two moments)."""
    found = {"experts": 0, "other": 0}
    tensors = [(n, p, p.requires_grad) for n, p in model.named_parameters()]
    tensors += [(n, b, False) for n, b in model.named_buffers()]
    for name, tensor, trained in tensors:
        if ".layers.0." in name:
            part = "experts" if ".mlp.experts." in name else "other"
            found[part] += tensor.numel() * tensor.element_size() * (4 if trained else 1)
    return found


def worker(args) -> int:
    import torch
    from trl.trainer.utils import add_fused_lm_head

    from ossft.model.load import apply_lora, keep_frozen_experts_in_mxfp4, load_model

    seq = args.seqs[0]
    recipe = recipe_for(args.checkpoint, args.worker, seq)
    before = proc_status("VmRSS")
    started = time.perf_counter()
    torch.manual_seed(0)  # the same lora_A in both modes, so their first losses can be compared
    model = keep_frozen_experts_in_mxfp4(apply_lora(load_model(recipe), recipe), recipe)
    add_fused_lm_head(model.get_base_model(), outputs=("log_probs", "entropy", "is_top1"))  # as SFTTrainer does
    model.get_base_model().activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    load_seconds = time.perf_counter() - started
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, model.config.vocab_size, (1, seq), generator=generator)
    labels = input_ids.clone()
    labels[:, : max(seq - args.loss_tokens, 0)] = -100

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.sum()  # weights the load left memory-mapped count only once read: read them all now
    gc.collect()
    rest = proc_status("VmRSS")
    rest_file = proc_status("RssFile")
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again from `rest`
    losses, seconds = [], []
    for _ in range(1 + args.repeat):
        began = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = model(input_ids=input_ids, labels=labels, fused_lm_head=True).loss
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - began)
        losses.append(loss.item())
    measured = {
        "before": before,
        "rest": rest,
        "rest_file": rest_file,
        "peak": proc_status("VmHWM"),
        "seconds": statistics.median(seconds[1:] or seconds),
        "all_seconds": seconds,
        "first_loss": losses[0],
        "load_seconds": load_seconds,
        "load_average": os.getloadavg()[0],  # other work on the machine shows here, and in the times
        "trainable": sum(p.numel() for p in trainable),
        "layer": layer_bytes(model),
    }
    print(json.dumps(measured))
    return 0


# ---------------------------------------------------------------------------------------------
# Parent: the checkpoint, a process per (mode, seq), the plan's figures, the section


def run_child(args, extra: list[str]) -> tuple[dict | None, str]:
    command = [sys.executable, __file__, *extra, "--loss-tokens", str(args.loss_tokens), "--repeat", str(args.repeat)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1].replace("|", "/")[:200]
        return None, f"failed (exit {done.returncode}: {last})"  # killed for memory: exit -9
    return json.loads(done.stdout.strip().splitlines()[-1]), ""


def plan_bytes(folder: Path, mode: str, seq: int) -> float | None:
    """`ossft plan`'s allocated bytes for this step (no framework overhead: that is the CUDA context). None
    for mxfp4 while the plan has no term for it (memory.Workload without an `mxfp4_experts` field)."""
    from ossft.gptoss.facts import model_shape
    from ossft.launch import memory

    recipe = recipe_for(folder, mode, seq)
    shape = model_shape(str(folder))
    layout = memory.Layout(gpus=1, sharded=False, offload_params=False, offload_optimizer=False, deepspeed=False)
    workload = memory.workload_of(recipe, layout, shape)
    if "mxfp4_experts" in {f.name for f in fields(memory.Workload)}:
        workload = replace(workload, mxfp4_experts=mode == "mxfp4")
    elif mode == "mxfp4":
        return None
    return memory.estimate_workload(shape, workload, layout).allocated


def measure_all(args, folder: Path) -> dict:
    results = {}
    for seq in args.seqs:
        for mode in MODES:
            print(f"{mode} at {seq:,} tokens ...", file=sys.stderr, flush=True)
            found, failure = run_child(args, ["--worker", mode, "--checkpoint", str(folder), "--seqs", str(seq)])
            results[(mode, seq)] = found or {"failed": failure}
            results[(mode, seq)]["plan"] = plan_bytes(folder, mode, seq)
    return results


def gib(value: float) -> str:
    return f"{value / GIB:,.2f}"


def table(results: dict, args) -> list[str]:
    lines = [
        "| seq | mode | at rest GiB | step peak GiB | peak - rest GiB | peak - before load GiB | plan GiB "
        "| s / step | first loss |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for seq in args.seqs:
        for mode in MODES:
            r = results[(mode, seq)]
            plan = "n/a" if r["plan"] is None else gib(r["plan"])
            if "failed" in r:
                lines.append(f"| {seq:,} | {mode} | {r['failed']} | | | | {plan} | | |")
                continue
            lines.append(
                f"| {seq:,} | {mode} | {gib(r['rest'])} | {gib(r['peak'])} | {gib(r['peak'] - r['rest'])} "
                f"| {gib(r['peak'] - r['before'])} | {plan} | {r['seconds']:,.1f} | {r['first_loss']:.6f} |"
            )
    return lines


def per_layer(result: dict, experts: int, measured_experts: int) -> float:
    """One layer's bytes (frozen weights; LoRA with its gradient and moments) with `experts` experts, from
    layer 0 as measured with `measured_experts`."""
    return result["layer"]["other"] + result["layer"]["experts"] * experts / measured_experts


def extrapolated_peak(result: dict, args, seq: int, layers: int, experts: int) -> float:
    """The measured peak with its layers swapped for `layers` of `experts` experts: only the weights and the
    checkpointed inputs grow; the step's transients (one layer's recompute, the dequantized chunk, the loss
    tile) are those of one layer, and the embeddings and LM head are the same in 20b and 120b."""
    weights = layers * per_layer(result, experts, args.experts) - args.layers * per_layer(
        result, args.experts, args.experts
    )
    kept = (layers - args.layers) * seq * args.hidden * 2  # each checkpointed layer keeps its bf16 input
    return result["peak"] + weights + kept


def above_rest(result: dict) -> float:
    return result["peak"] - result["rest"]


def extrapolation(results: dict, args) -> list[str]:
    done = [seq for seq in args.seqs if all("peak" in results[(mode, seq)] for mode in MODES)]
    if not done:
        return ["- no length ran in both modes: nothing to extrapolate"]
    bf16, mxfp4 = (results[(mode, done[0])] for mode in MODES)
    one = {mode: per_layer(results[(mode, done[0])], args.experts, args.experts) / GIB for mode in MODES}
    transient = ", ".join(
        f"{seq:,}: {gib(above_rest(results[('mxfp4', seq)]) - above_rest(results[('bf16', seq)]))}" for seq in done
    )
    lines = [
        f"- per layer: at rest bf16 - mxfp4 measures {(bf16['rest'] - mxfp4['rest']) / args.layers / GIB:.3f} GiB "
        f"(the experts' tensors differ by {(bf16['layer']['experts'] - mxfp4['layer']['experts']) / GIB:.3f} GiB); "
        f"a layer's tensors, LoRA's parameter, gradient and AdamW moments included: {one['bf16']:.3f} GiB with "
        f"bf16 experts, {one['mxfp4']:.3f} GiB with MXFP4 ones",
        f"- the dequantized transient, (peak - rest) of mxfp4 minus that of bf16, GiB: {transient}",
        f"- extrapolated peak(L layers, E experts) = measured peak - {args.layers} x layer({args.experts}) "
        f"+ L x layer(E) + (L - {args.layers}) x seq x {args.hidden} x 2 B, layer(E) = a layer's tensors above "
        f"with the experts' part times E / {args.experts}; the step's transients (one layer's recompute, one "
        "dequantized chunk of at most 512 MiB, the loss tile) and the embeddings and LM head stay as measured; the "
        "checkpoint's file-backed pages of the added layers are not counted (the kernel may drop them):",
        "",
        "| seq | "
        + " | ".join(
            f"{name} ({layers} x {experts}) {mode} GiB" for name, (layers, experts) in TARGETS.items() for mode in MODES
        )
        + " | "
        + " | ".join(f"{name} mxfp4 / bf16" for name in TARGETS)
        + " |",
        "| ---: |" + " ---: |" * (3 * len(TARGETS)),
    ]
    for seq in done:
        cells, ratios = [], []
        for layers, experts in TARGETS.values():
            bf16_peak, mxfp4_peak = (extrapolated_peak(results[(m, seq)], args, seq, layers, experts) for m in MODES)
            cells += [gib(bf16_peak), gib(mxfp4_peak)]
            ratios.append(f"{mxfp4_peak / bf16_peak:.2f}")
        lines.append(f"| {seq:,} | " + " | ".join(cells + ratios) + " |")
    return lines


def timing(results: dict, args) -> list[str]:
    both = [seq for seq in args.seqs if all("seconds" in results[(mode, seq)] for mode in MODES)]
    ratios = ", ".join(f"{s:,}: {results[('mxfp4', s)]['seconds'] / results[('bf16', s)]['seconds']:.2f}" for s in both)
    extra = ", ".join(
        f"{s:,}: {(results[('mxfp4', s)]['seconds'] - results[('bf16', s)]['seconds']) / (3 * args.layers):,.1f}"
        for s in both
    )
    every = "; ".join(
        f"{mode} {seq:,}: {', '.join(f'{t:,.1f}' for t in r['all_seconds'])} (load {r['load_seconds']:,.0f}; "
        f"load average {r['load_average']:.2f} after)"
        for (mode, seq), r in results.items()
        if "all_seconds" in r
    )
    return [
        f"- time mxfp4 / bf16 by seq: **{ratios or 'n/a'}**",
        "- (mxfp4 - bf16) seconds per step over 3 x layers, i.e. per dequantization of one layer's experts (the "
        f"forward, its recompute and the backward each dequantize every layer): {extra or 'n/a'}",
        f"- every step (s), the model's load with the conversion (s), and the 1-minute load average after the "
        f"step(s): {every}",
    ]


def section(results: dict, args, facts: dict, checkpoint_bytes: int) -> str:
    ran = [r for r in results.values() if "peak" in r]
    before = sorted(r["before"] for r in ran) or [0]
    mapped = sorted(r["rest_file"] for r in ran) or [0]
    width = "tiny widths" if args.tiny else "gpt-oss-20b's widths"
    unplanned = any(r["plan"] is None for r in results.values())
    steps = f"one warm-up and {args.repeat} timed steps" if args.repeat else "the one (timed) step"
    lines = [
        f"## MXFP4 experts against bf16 experts: a LoRA step at {width}, {args.layers} layers ({facts['date']})",
        "",
        f"- machine: {facts['cpu']}, {facts['cores']} cores usable; 1-minute load average {facts['load']} before the runs",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()),
        f"- command: `{facts['command']}`",
        f"- model: gpt-oss, {args.layers} layers (sliding and full), hidden = intermediate = {args.hidden}, "
        f"{args.heads} / {args.kv_heads} heads of {args.head_dim}, {args.experts} experts top-{args.top_k}, "
        f"vocabulary {args.vocab:,}, random weights, bf16; the MXFP4 checkpoint is {checkpoint_bytes / GIB:.2f} GiB",
        "- run: recipes/quickstart.yaml with model.dtype bfloat16, eager attention, LoRA r=8 on q/k/v/o and every "
        "expert layer (routed); activation checkpointing (use_reentrant False), TRL's fused LM head, torch AdamW; "
        f"micro-batch 1, random token ids, the loss on the last {args.loss_tokens} tokens (labels -100 before)",
        f"- memory: VmRSS at rest (loaded, converted, every weight read once), then the high-water mark is reset "
        f"(clear_refs 5) and the step peak is VmHWM over {steps}; each (mode, seq) in a fresh process. Before the "
        f"load the interpreter and libraries hold {gib(before[0])}-{gib(before[-1])} GiB; at rest "
        f"{gib(mapped[0])}-{gib(mapped[-1])} GiB is file-backed in both modes: transformers keeps the checkpoint "
        "mapped, its embeddings and LM head used in place and the MXFP4 blocks read at load still resident (clean "
        "pages the kernel may drop)",
        "- plan: `ossft.launch.memory.estimate_workload` for this shape and recipe, its allocated bytes (no CUDA "
        "framework overhead), beside 'peak - before load'; its loss term counts every token, this run scores "
        "--loss-tokens" + ("; n/a: this ossft's plan has no MXFP4-experts term" if unplanned else ""),
        "",
        *table(results, args),
        "",
        *timing(results, args),
        *extrapolation(results, args),
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2, choices=(2, 3, 4))
    # 4096 as well (--seqs 1024 2048 4096) takes ~10 minutes more and a ~17 GiB peak on 2 cores.
    parser.add_argument("--seqs", type=int, nargs="+", default=[1024, 2048])
    # A step takes minutes on CPU, which one-time costs barely change: by default the one step is timed.
    parser.add_argument("--repeat", type=int, default=0, help="timed steps after a warm-up; 0: one step, timed")
    parser.add_argument("--loss-tokens", type=int, default=256)
    parser.add_argument("--tiny", action="store_true", help="small widths, for the test suite")
    parser.add_argument("--markdown", type=Path, help="append the results to this file (BENCHMARKS.md)")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key, value in (TINY if args.tiny else REAL).items():
        setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.build:
        build_checkpoint(args, args.build)
        return 0
    if args.worker:
        return worker(args)
    facts = bench_facts(__file__, ("torch", "transformers", "peft", "trl"))
    with tempfile.TemporaryDirectory(prefix="ossft-bench-mxfp4-") as folder:
        checkpoint = Path(folder) / "gpt-oss"
        checkpoint.mkdir()
        build = subprocess.run(
            [sys.executable, __file__, "--build", str(checkpoint), "--layers", str(args.layers)]
            + (["--tiny"] if args.tiny else []),
            capture_output=True,
            text=True,
        )
        if build.returncode != 0:
            raise SystemExit(f"building the checkpoint failed:\n{build.stderr[-3000:]}")
        checkpoint_bytes = sum(f.stat().st_size for f in checkpoint.iterdir())
        results = measure_all(args, checkpoint)
    text = section(results, args, facts, checkpoint_bytes)
    print(text)
    if args.markdown:
        append_markdown(args.markdown, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
