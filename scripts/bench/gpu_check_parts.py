"""The five parts of scripts/bench/gpu_check.py. Each runs in a process of its own (`gpu_check.py
--run-part X`) and writes its results as JSON lines the moment each is known, so a part killed at its
time box, or one that dies of a CUDA error, still leaves the rows it finished; a row that fails (an
out-of-memory at the longest length, say) is written as a failed row and the part goes on.

The training runs are gpu_lora.py's own (`run_config`, `longest_sequence`), on the same random model,
so gpu_check's numbers and a direct gpu_lora.py run with the same flags measure the same thing.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import gpu_lora
from gpu_lora_longest import longest_sequence

FLEX = gpu_lora.FLEX
GIB = 2**30
PLAN_GPU_GIB_ON_CPU = 80.0  # the dry run's plan figure for (d): ossft plan's default GPU
LONGEST_MARGIN = 25  # seconds of (d)'s time box kept for starting up and writing the last rows


@dataclasses.dataclass(frozen=True)
class Settings:
    shape: str
    layers: int | None
    kernel_lengths: tuple[int, ...]  # (a): packed comparisons beyond check_kernel's 512 tokens
    throughput_seq: int  # (b), (e): real tokens per step, in examples of seq/2, seq/4, seq/8, seq/8
    throughput_steps: int
    throughput_warmup: int
    memory_runs: tuple[tuple[str, int], ...]  # (c): (attention, seq) at micro-batch 1
    longest_start: int  # (d): doubling from here, bisecting to the resolution, never past the cap
    longest_cap: int
    longest_resolution: int
    time_boxes: dict  # seconds per part; (d), run last, gets what the total leaves
    total_seconds: float
    smallest_longest_box: float  # (d) does not start with less time left
    out: str
    peak_tflops: float
    dry_run: bool


# One H100 or H200 from a bare machine in ten minutes, wheels installed first (seconds). The 20b shape
# at 4 of its 24 layers keeps every per-layer tensor real (experts, heads, vocabulary) in ~9 GiB.
GPU_SETTINGS = dict(
    shape="20b", layers=4, kernel_lengths=(4096, 16384), throughput_seq=4096, throughput_steps=6,
    throughput_warmup=2, memory_runs=(("eager", 4096), (FLEX, 4096), (FLEX, 16384)), longest_start=65536,
    longest_cap=262_144, longest_resolution=16384, time_boxes={"a": 100, "b": 140, "c": 110, "e": 90},
    total_seconds=510,  # unchanged when (e) came: its 90 s are taken from what (d) searched with
    smallest_longest_box=45,  # one probe alone: start, compile, two steps
)  # fmt: skip
# The same code paths on a 2-core CPU in under two minutes: the tiny shape, tiny lengths.
DRY_SETTINGS = dict(
    shape="tiny", layers=None, kernel_lengths=(1024, 2048), throughput_seq=256, throughput_steps=4,
    throughput_warmup=1, memory_runs=(("eager", 256), (FLEX, 256), (FLEX, 1024)), longest_start=512,
    longest_cap=1024, longest_resolution=256, time_boxes={"a": 60, "b": 90, "c": 90, "e": 60},
    total_seconds=170,
    smallest_longest_box=15,
)  # fmt: skip


class Rows:
    """One JSON object a line, appended and closed at once: what is written survives a kill."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, kind: str, value) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({kind: value}, default=str) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def gpu_facts() -> dict | None:
    """GPU 0's name, memory and driver without a CUDA context in this process (nvidia-smi, else torch in
    a process of its own), or None where there is no GPU."""
    query = ["nvidia-smi", "-i", "0", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"]
    probe = "import torch; p = torch.cuda.get_device_properties(0); print(p.name, ',', p.total_memory / 2**20, ', ?')"
    for command in (query, [sys.executable, "-c", probe]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip():
            name, memory, driver = (field.strip() for field in done.stdout.strip().splitlines()[0].rsplit(",", 2))
            return {"name": name, "memory_gib": float(memory) / 1024, "driver": driver}
    return None


def first_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0].strip()}" if lines else type(error).__name__


def free_memory() -> None:
    import torch

    gc.collect()  # the trainer and model of the last run sit in reference cycles
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def lora_args(settings: Settings, *flags: str):
    """gpu_lora.py's arguments for one run of this check's shape."""
    argv = ["--shape", settings.shape, "--out", settings.out, "--peak-tflops", str(settings.peak_tflops)]
    argv += ["--layers", str(settings.layers)] if settings.layers else []
    argv += ["--cpu-flex-backward"] if settings.dry_run else []
    return gpu_lora.parse_args([*argv, *flags])


# (a) ------------------------------------------------------------------------------------------


def packed_lengths(length: int, seed: int) -> list[int]:
    """Documents filling `length` tokens: a lone token, one inside the sliding window, then documents
    longer than the window and than flex's 128-token blocks, so that every mask rule is crossed."""
    from ossft.model.sink_attention import CHECK_WINDOW

    pick = random.Random(seed)
    lengths = [1, CHECK_WINDOW // 2 + 7]
    while sum(lengths) < length:
        lengths.append(min(pick.randint(CHECK_WINDOW, max(CHECK_WINDOW, length // 3)), length - sum(lengths)))
    return lengths


def long_comparison(device: str, length: int) -> dict:
    """check_kernel's comparison on a longer packed batch: ossft_flex in bf16 against transformers' eager
    gpt-oss attention in fp32 on the same bf16 inputs, output and every gradient, both windows."""
    import torch
    from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

    from ossft.model.documents import BlockMasks, document_ids, eager_mask
    from ossft.model.sink_attention import (
        CHECK_TOLERANCE,
        CHECK_WINDOW,
        attention_and_gradients,
        relative_error,
        sink_attention,
    )

    started = time.perf_counter()
    lengths = packed_lengths(length, seed=length)
    generator = torch.Generator().manual_seed(length)
    heads, kv_heads, head_dim = 8, 1, 64  # check_kernel's: gpt-oss's 8 query heads per kv head

    def normal(*shape):
        return torch.randn(*shape, generator=generator).to(device, torch.bfloat16)

    tensors = {"query": normal(1, heads, length, head_dim), "key": normal(1, kv_heads, length, head_dim)}
    tensors |= {"value": normal(1, kv_heads, length, head_dim), "sinks": normal(heads)}
    starts = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device=device)
    documents = document_ids(length, cu_seq_lens=starts)
    output_error = gradient_error = 0.0
    for window in (CHECK_WINDOW, None):
        cotangent = torch.randn(1, length, heads, head_dim, generator=generator).to(device)
        block_mask = BlockMasks().get(documents, None, window)
        out, grads = attention_and_gradients(sink_attention, tensors, torch.bfloat16, block_mask, cotangent)
        dense = eager_mask(documents, None, window, torch.float32)
        want, want_grads = attention_and_gradients(eager_attention_forward, tensors, torch.float32, dense, cotangent)
        output_error = max(output_error, relative_error(out, want))
        gradient_error = max([gradient_error] + [relative_error(grads[n], want_grads[n]) for n in grads])
        del out, grads, want, want_grads, dense, block_mask
        free_memory()
    passed = output_error <= CHECK_TOLERANCE["output"] and gradient_error <= CHECK_TOLERANCE["gradients"]
    return {
        "batch": "packed", "tokens": length, "documents": len(lengths), "output_error": output_error,
        "gradient_error": gradient_error, "passed": passed, "seconds": time.perf_counter() - started,
    }  # fmt: skip


def kernel_part(settings: Settings, rows: Rows, device: str, seconds: float) -> None:
    from ossft.model.sink_attention import CHECK_DOCUMENTS, check_kernel

    check = check_kernel(device)
    row = {"batch": "check_kernel", "tokens": sum(CHECK_DOCUMENTS), "documents": len(CHECK_DOCUMENTS)}
    rows.write("row", row | dataclasses.asdict(check))
    for length in settings.kernel_lengths:
        try:
            rows.write("row", long_comparison(device, length))
        except Exception as error:  # noqa: BLE001 - an out-of-memory at 16k must not hide the 4k row
            rows.write("row", {"batch": "packed", "tokens": length, "error": first_line(error)})
        free_memory()


# (b) ------------------------------------------------------------------------------------------


def throughput_part(settings: Settings, rows: Rows, device: str, seconds: float) -> None:
    args = lora_args(
        settings, "--packing", "--attn", FLEX, "--seq", str(settings.throughput_seq),
        "--steps", str(settings.throughput_steps), "--warmup", str(settings.throughput_warmup),
    )  # fmt: skip
    shape = gpu_lora.shape_of(args.shape, args.layers)
    for attn, packed in (("eager", False), (FLEX, True)):
        try:
            result = gpu_lora.run_config("ossft", args, shape, device, attn=attn, packing=packed)
        except Exception as error:  # noqa: BLE001 - the other configuration still runs
            result = {"attention": attn, "packed": packed, "error": first_line(error)}
        rows.write("row", result)
        free_memory()


# (c) ------------------------------------------------------------------------------------------


def plan_recipe(args, shape, device: str, attn: str):
    recipe = gpu_lora.ossft_recipe(args, shape, Path(args.out) / "plan", attn, False, 1, device)
    recipe.model.attn_implementation = attn  # without a GPU the recipe says eager; the plan counts `attn`
    return recipe


def memory_part(settings: Settings, rows: Rows, device: str, seconds: float) -> None:
    from ossft.launch.memory import estimate
    from ossft.launch.plan import layout_for

    for attn, seq in settings.memory_runs:
        args = lora_args(settings, "--attn", attn, "--seq", str(seq), "--steps", "3", "--warmup", "1")
        shape = gpu_lora.shape_of(args.shape, args.layers)
        recipe = plan_recipe(args, shape, device, attn)
        planned = estimate(recipe, layout_for(recipe), shape)
        row = {"attention": attn, "seq": seq, "plan_allocated_gib": planned.allocated / GIB}
        row["plan_reserved_gib"] = planned.reserved / GIB
        try:
            row |= gpu_lora.run_config("ossft", args, shape, device)
        except Exception as error:  # noqa: BLE001 - an out-of-memory is a result here too
            row["error"] = first_line(error)
        rows.write("row", row)
        free_memory()


# (d) ------------------------------------------------------------------------------------------


def planned_longest(args, shape, device: str, gpu_gib: float) -> int:
    """What `ossft plan` predicts for the same search: its estimate at each length, in the same steps."""
    from dataclasses import replace

    from ossft.launch.memory import estimate_workload, fits, longest_passing, workload_of
    from ossft.launch.plan import layout_for

    recipe = plan_recipe(args, shape, device, FLEX)
    layout = layout_for(recipe)
    workload = workload_of(recipe, layout, shape)

    def fits_at(seq: int) -> bool:
        return fits(estimate_workload(shape, replace(workload, seq=seq), layout), gpu_gib)

    return longest_passing(fits_at, start=args.resolution, step=args.resolution, cap=args.max_seq)


def longest_part(settings: Settings, rows: Rows, device: str, seconds: float) -> None:
    args = lora_args(
        settings, "--longest", "--attn", FLEX, "--seq", str(settings.longest_start),
        "--max-seq", str(settings.longest_cap), "--resolution", str(settings.longest_resolution),
        "--time-box", str(max(seconds - LONGEST_MARGIN, 1)),
    )  # fmt: skip
    shape = gpu_lora.shape_of(args.shape, args.layers)
    # nvidia-smi, not torch: a CUDA context here would hold memory the probes' processes then lack.
    gpu_gib = PLAN_GPU_GIB_ON_CPU if settings.dry_run else gpu_facts()["memory_gib"]
    rows.write("plan", {"longest": planned_longest(args, shape, device, gpu_gib), "gpu_gib": gpu_gib})
    kept = ("seq", "fits", "seconds", "peak_reserved_gib", "peak_allocated_gib", "step_seconds")
    search = longest_sequence(args, on_attempt=lambda a: rows.write("row", {k: a[k] for k in kept if k in a}))
    best = search.best or {}
    rows.write("summary", {"longest": best.get("seq", 0), "stopped": search.stopped})


# (e) ------------------------------------------------------------------------------------------


def mxfp4_part(settings: Settings, rows: Rows, device: str, seconds: float) -> None:
    """(b)'s packed ossft_flex run, its frozen experts in bf16 then in MXFP4 (gpu_lora --mxfp4-experts)."""
    args = lora_args(
        settings, "--packing", "--attn", FLEX, "--seq", str(settings.throughput_seq),
        "--steps", str(settings.throughput_steps), "--warmup", str(settings.throughput_warmup),
    )  # fmt: skip
    shape = gpu_lora.shape_of(args.shape, args.layers)
    for experts in ("bf16", "mxfp4"):
        args.mxfp4_experts = experts == "mxfp4"
        try:
            result = gpu_lora.run_config("ossft", args, shape, device, attn=FLEX, packing=True)
        except Exception as error:  # noqa: BLE001 - an out-of-memory in one mode is that mode's result
            result = {"error": first_line(error)}
        rows.write("row", {"experts": experts, **result})
        free_memory()


PARTS = {"a": kernel_part, "b": throughput_part, "c": memory_part, "d": longest_part, "e": mxfp4_part}
# (d) searches for as long as the check has left, so it runs last; the report keeps the letters' order.
RUN_ORDER = ("a", "b", "c", "e", "d")
