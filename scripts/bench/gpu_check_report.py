"""The BENCHMARKS.md section of scripts/bench/gpu_check.py: the machine, the command, and one table
per part, with a failed part's error under its heading and whatever rows it finished before it."""

from __future__ import annotations

import math
from pathlib import Path

import gpu_lora
from data_prep import run_facts

from ossft.model.sink_attention import CHECK_TOLERANCE

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")
DRY_RUN_NOTICE = "CPU dry run: not GPU numbers"


def number(value, spec: str | None = None) -> str:
    """GiB to 0.1 above one, two significant digits below (the dry run's plan holds megabytes)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec or (".1f" if abs(value) >= 1 else ".2g"))


def table(header: list[str], rows: list[list[str]], right_from: int = 1) -> list[str]:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("| " + " | ".join("---" if i < right_from else "---:" for i in range(len(header))) + " |")
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def failed_row(label: list[str], error: str, width: int) -> list[str]:
    return label + [f"failed: {error}"] + [""] * (width - len(label) - 1)


def kernel_section(outcome) -> list[str]:
    lines = [
        "Errors are the largest difference over the fp32 reference's largest magnitude, for the output and every "
        "gradient (query, key, value, sinks), the sliding window and the full one; allowed "
        f"{CHECK_TOLERANCE['output']:.0e} and {CHECK_TOLERANCE['gradients']:.0e}.",
        "",
    ]
    header = ["batch", "tokens", "documents", "output error", "gradient error", "verdict", "seconds"]
    rows = []
    for r in outcome.of("row"):
        label = [r["batch"], f"{r['tokens']:,}"]
        if "error" in r:
            rows.append(failed_row(label, r["error"], len(header)))
            continue
        verdict = "pass" if r["passed"] else "**FAIL**"
        errors = [f"{r['output_error']:.1e}", f"{r['gradient_error']:.1e}"]
        rows.append(label + [str(r["documents"]), *errors, verdict, f"{r['seconds']:.1f}"])
    return lines + table(header, rows)


def throughput_section(outcome, settings) -> list[str]:
    seq, shape = settings.throughput_seq, gpu_lora.shape_of(settings.shape, settings.layers)
    pieces = ", ".join(str(n) for n in gpu_lora.example_lengths(seq, 1, varied=True))
    lines = [
        f"{settings.throughput_steps} steps, the first {settings.throughput_warmup} left out; examples of {pieces} "
        f"tokens, padded in micro-batches of {gpu_lora.EXAMPLES_PER_ROW} under eager, packed (TRL's BFD, "
        f"padding-free) into rows of {seq:,} under ossft_flex: the same real tokens per step on average. "
        f"tokens/s and MFU count real tokens; MFU = 6 N_active tokens/s / {settings.peak_tflops:g} TFLOP/s, "
        f"N_active = {gpu_lora.active_params(shape) / 1e9:.2f} B (attention, router, top-{shape.top_k} experts; "
        f"not the {shape.vocab * shape.hidden / 1e9:.2f} B LM head, whose work the step does too).",
        "",
    ]
    header = ["batches", "attention", "real tokens/step", "computed tokens/step", "tokens/s", "MFU"]
    header += ["steady step s", "first step s", "peak allocated GiB", "peak reserved GiB"]
    rows, speed = [], {}
    for r in outcome.of("row"):
        label = ["packed" if r["packed"] else "padded", r["attention"]]
        if "error" in r:
            rows.append(failed_row(label, r["error"], len(header)))
            continue
        speed[r["packed"]] = r["tokens_per_second"]
        rows.append(
            label
            + [f"{r['real_tokens_per_step']:,.0f}", f"{r['computed_tokens_per_step']:,.0f}"]
            + [f"{r['tokens_per_second']:,.0f}", f"{100 * r['mfu']:.2f}%"]
            + [f"{r['step_seconds']:.3f}", f"{r['first_step_seconds']:.1f}"]
            + [number(r.get("peak_allocated_gib")), number(r.get("peak_reserved_gib"))]
        )
    lines += table(header, rows, right_from=2)
    if len(speed) == 2:
        lines += ["", f"packed + ossft_flex / padded + eager tokens/s: **{speed[True] / speed[False]:.2f}**"]
    return lines


def memory_section(outcome) -> list[str]:
    lines = [
        "Micro-batch 1, one row of seq tokens, 3 steps. Measured: torch.cuda.max_memory_allocated and "
        "max_memory_reserved over the run. Plan: ossft.launch.memory.estimate for the same recipe, shape and "
        "length; its reserved is allocated x 1.10 plus 1.5 GiB of CUDA context and libraries, which torch's "
        "counters do not see.",
        "",
    ]
    header = ["attention", "seq", "peak allocated GiB", "plan allocated GiB", "measured / plan"]
    header += ["peak reserved GiB", "plan reserved GiB"]
    rows = []
    for r in outcome.of("row"):
        label = [r["attention"], f"{r['seq']:,}"]
        plan = [number(r["plan_allocated_gib"]), number(r["plan_reserved_gib"])]
        if "error" in r:
            rows.append(label + [f"failed: {r['error']}", plan[0], "", "", plan[1]])
            continue
        measured = r.get("peak_allocated_gib")
        ratio = None if measured is None else measured / r["plan_allocated_gib"]
        rows.append(
            label + [number(measured), plan[0], number(ratio, ".2f"), number(r.get("peak_reserved_gib")), plan[1]]
        )
    return lines + table(header, rows)


def longest_section(outcome, settings) -> list[str]:
    lines = [
        f"Doubling from {settings.longest_start:,} tokens, never past {settings.longest_cap:,}, then bisecting to "
        f"{settings.longest_resolution:,}; 2 steps per length, each length in a fresh process; the search "
        f"stops where the time box would end before another length could ({outcome.seconds:.0f} s used).",
        "",
    ]
    header = ["seq", "result", "peak allocated GiB", "peak reserved GiB", "seconds"]
    attempts = sorted(outcome.of("row"), key=lambda a: a["seq"])
    rows = [
        [f"{a['seq']:,}", "trains" if a["fits"] else "out of memory", number(a.get("peak_allocated_gib"))]
        + [number(a.get("peak_reserved_gib")), f"{a['seconds']:.0f}"]
        for a in attempts
    ]
    lines += table(header, rows, right_from=2)
    lines += [""] if attempts or outcome.of("plan") else []
    for summary in outcome.of("summary"):
        longest = summary["longest"]
        if not longest:
            lines.append(f"Not even {settings.longest_start:,} tokens trained.")
        elif summary["stopped"]:
            lines.append(f"Longest: **at least {longest:,} tokens** (the time box ended the search).")
        elif all(a["fits"] for a in attempts):
            lines.append(f"Longest: **{longest:,} tokens**, the cap: no length up to it ran out of memory.")
        else:
            lines.append(f"Longest: **{longest:,} tokens**.")
    if attempts and not outcome.of("summary"):  # the time box killed the search: what it had found
        found = max((a["seq"] for a in attempts if a["fits"]), default=0)
        lines.append(f"Longest so far: **at least {found:,} tokens**." if found else "No length trained so far.")
    for plan in outcome.of("plan"):
        lines.append(
            f"`ossft plan`'s estimate, searched the same way on a {plan['gpu_gib']:.1f} GiB GPU: {plan['longest']:,} tokens."
        )
    return lines


def mxfp4_section(outcome, settings) -> list[str]:
    lines = [
        f"(b)'s packed ossft_flex run ({settings.throughput_seq:,} real tokens a step, {settings.throughput_steps} "
        f"steps, the first {settings.throughput_warmup} left out), once with the frozen experts in bf16 and once "
        "kept as MXFP4 blocks and scales, dequantized just in time (model.mxfp4_experts), its random experts first "
        "rounded to values MXFP4 holds exactly (the values change neither speed nor memory). The MXFP4 peak counts "
        "from after the bf16 experts were packed and freed: the training's, not the random model's construction.",
        "",
    ]
    header = ["experts", "tokens/s", "steady step s", "first step s", "peak allocated GiB", "peak reserved GiB"]
    rows, by = [], {}
    for r in outcome.of("row"):
        if "error" in r:
            rows.append(failed_row([r["experts"]], r["error"], len(header)))
            continue
        by[r["experts"]] = r
        rows.append(
            [r["experts"], f"{r['tokens_per_second']:,.0f}", f"{r['step_seconds']:.3f}"]
            + [
                f"{r['first_step_seconds']:.1f}",
                number(r.get("peak_allocated_gib")),
                number(r.get("peak_reserved_gib")),
            ]
        )
    lines += table(header, rows)
    if len(by) == 2:

        def ratio(key: str) -> str:
            mxfp4, bf16 = by["mxfp4"].get(key), by["bf16"].get(key)
            return "n/a" if mxfp4 is None or bf16 is None else f"**{mxfp4 / bf16:.2f}**"

        lines += [
            "",
            f"MXFP4 / bf16: tokens/s {ratio('tokens_per_second')}, peak reserved {ratio('peak_reserved_gib')}, "
            f"peak allocated {ratio('peak_allocated_gib')}",
        ]
    return lines


TITLES = {
    "a": "(a) ossft_flex against eager attention: bf16, forward and backward, sinks included",
    "b": "(b) LoRA training steps: padded + eager against packed + ossft_flex",
    "c": "(c) Peak memory against `ossft plan`",
    "d": "(d) The longest sequence ossft_flex trains",
    "e": "(e) LoRA training steps: frozen experts in MXFP4 against in bf16",
}


def shape_words(settings) -> str:
    shape = gpu_lora.shape_of(settings.shape, settings.layers)
    of = f"{shape.layers} of its 24 layers" if settings.shape == "20b" else f"{shape.layers} layers"
    layers = ", ".join(map(str, gpu_lora.expert_layers_of(shape)))
    return (
        f"gpt-oss-{settings.shape}, {of}: hidden {shape.hidden}, {shape.heads} heads / {shape.kv_heads} kv heads, "
        f"head_dim {shape.head_dim}, {shape.experts} experts top-{shape.top_k}, vocab {shape.vocab:,}; random "
        f"{'fp32' if settings.dry_run else 'bf16'} weights and random tokens; LoRA r 8 on q/k/v/o and on the "
        f"experts of layers {layers} (ossft's quickstart LoRA, the cookbook's expert layers at the same depths)"
    )


def report(settings, outcomes: dict, gpu: dict | None, seconds: float, script: Path) -> str:
    facts = run_facts(str(script), PACKAGES)
    where = f"{gpu['name']}" if gpu else "CPU"
    title = f"## GPU check: gpt-oss-{settings.shape} shape on {where} ({facts['date']})"
    lines = [title, ""]
    if settings.dry_run:
        lines += [f"**{DRY_RUN_NOTICE}.** The tiny shape on CPU, to run every part's code; timings mean nothing.", ""]
    device = f"{gpu['name']}, {gpu['memory_gib']:.1f} GiB, driver {gpu['driver']}; " if gpu else ""
    spent = ", ".join(f"({p}) {o.seconds:.0f} s" for p, o in outcomes.items() if o.seconds)
    lines += [
        f"- machine: {device}{facts['cpu']}, {facts['cores']} cores usable; {facts['system']}",
        "- versions: " + ", ".join(f"{name} {version}" for name, version in facts["versions"].items()),
        f"- command: `{facts['command']}`",
        f"- shape: {shape_words(settings)}",
        f"- wall time: {seconds:.0f} s (time box {settings.total_seconds:.0f} s); {spent}",
    ]
    builders = {
        "a": kernel_section,
        "b": lambda o: throughput_section(o, settings),
        "c": memory_section,
        "d": lambda o: longest_section(o, settings),
        "e": lambda o: mxfp4_section(o, settings),
    }
    for part, outcome in outcomes.items():
        lines += ["", f"### {TITLES[part]}", ""]
        if not outcome.ran:
            lines.append(f"**Not run:** {outcome.error}.")
            continue
        if outcome.records or outcome.error is None:
            lines += builders[part](outcome)
        if outcome.error:
            lines += ["", f"**Failed:** {outcome.error}"] if outcome.records else [f"**Failed:** {outcome.error}"]
    return "\n".join(lines) + "\n"
