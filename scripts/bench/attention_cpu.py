"""Benchmark: CPU forward time and peak memory of compiled flex attention against eager attention, by length.

One packed row of several documents (--document-shares of its length), gpt-oss-shaped heads (64 query
heads, 8 kv heads, head_dim 64 unless shrunk), under two masks: gpt-oss's sliding window of 128 tokens
within each document, and full causal attention within each document.

- eager: transformers' `eager_attention_forward` for gpt-oss (sinks included) with ossft's `eager_mask`;
  it holds the [heads, L, L] scores, about three copies of them at its peak.
- flex: `torch.compile(flex_attention)` (ossft's `flex_kernel(compiled=True)`) with a BlockMask from
  ossft's `BlockMasks().get`. Compiled flex on CPU is forward-only and returns no lse, so this is the
  kernel without ossft's sink factor: it shows how the cost grows with length, not GPU speed or the sink.

Each (kernel, length) runs in a fresh process (this script with --worker), both masks one after the
other. Time: median of --repeat calls after one warm-up call; the warm-up (for flex: the compile, each
process from an empty inductor cache) is reported separately. Peak: getrusage's ru_maxrss over the
timed calls, minus the RSS before them; the high-water mark is reset first (/proc/self/clear_refs), so
imports, inputs, masks and the compile are not counted. Lengths whose eager peak would pass --memory-cap are skipped for eager, not run.

    .venv/bin/python scripts/bench/attention_cpu.py --markdown BENCHMARKS.md
    .venv/bin/python scripts/bench/attention_cpu.py --lengths 256 512 --heads 4 --kv-heads 2 --repeat 1
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_prep import append_markdown  # noqa: E402
from two_ways import bench_facts  # noqa: E402

KERNELS = ("eager", "flex")
MASKS = {"sliding 128": 128, "full causal": None}  # gpt-oss alternates the two, layer by layer
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
EAGER_SCORE_COPIES = 3  # scores, scores + mask, then the sink-extended logits and their shifted copy
GIB = 2**30


def document_lengths(length: int, shares: list[float]) -> list[int]:
    lengths = [round(length * share) for share in shares[:-1]]
    return [*lengths, length - sum(lengths)]


def eager_peak_estimate(args, length: int) -> int:
    """Bytes eager attention holds at its peak: a few copies of the [heads, L, L + 1] scores."""
    return EAGER_SCORE_COPIES * args.heads * length * (length + 1) * DTYPE_BYTES[args.dtype]


# ---------------------------------------------------------------------------------------------
# Worker: one kernel at one length, in its own process


def current_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def reset_peak_rss() -> None:
    """Make ru_maxrss start again from the current RSS (Linux: clear_refs 5 resets the high-water mark)."""
    Path("/proc/self/clear_refs").write_text("5")


def worker_inputs(args):
    import torch

    from ossft.model.documents import document_ids

    dtype = getattr(torch, args.dtype)
    generator = torch.Generator().manual_seed(0)

    def normal(*shape):
        return torch.randn(*shape, generator=generator).to(dtype)

    query = normal(1, args.heads, args.length, args.head_dim)
    key, value = (normal(1, args.kv_heads, args.length, args.head_dim) for _ in range(2))
    starts = [0]
    for size in document_lengths(args.length, args.document_shares):
        starts.append(starts[-1] + size)
    documents = document_ids(args.length, cu_seq_lens=torch.tensor(starts, dtype=torch.int32))
    module = SimpleNamespace(sinks=normal(args.heads), num_key_value_groups=args.heads // args.kv_heads, training=False)
    return query, key, value, documents, module


def attention_call(args, query, key, value, documents, module, window):
    """A no-argument forward of the chosen kernel, its mask built (outside what is measured)."""
    scaling = args.head_dim**-0.5
    if args.worker == "eager":
        from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

        from ossft.model.documents import eager_mask

        mask = eager_mask(documents, None, window, query.dtype)
        return lambda: eager_attention_forward(module, query, key, value, mask, scaling=scaling)[0]
    from ossft.model.documents import BlockMasks
    from ossft.model.sink_attention import flex_kernel

    block_mask = BlockMasks().get(documents, None, window)
    kernel = flex_kernel(compiled=True)
    return lambda: kernel(query, key, value, block_mask=block_mask, scale=scaling, enable_gqa=True)


def measure_call(call, repeat: int) -> dict:
    started = time.perf_counter()
    call()
    first_seconds = time.perf_counter() - started
    gc.collect()
    before = current_rss()
    reset_peak_rss()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()  # the output is dropped at once, as a layer's would be after its o_proj
        times.append(time.perf_counter() - started)
    # Freed pages returned between `before` and the reset can leave a few KiB below zero: no growth.
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before, 0)
    return {
        "seconds": statistics.median(times),
        "all_seconds": times,
        "first_seconds": first_seconds,
        "peak_bytes": peak,
    }


def worker(args) -> int:
    import torch

    inputs = worker_inputs(args)
    measured = {}
    with torch.no_grad():
        for name, window in MASKS.items():
            call = attention_call(args, *inputs, window)
            measured[name] = measure_call(call, args.repeat)
            del call
            gc.collect()
    print(json.dumps(measured))
    return 0


# ---------------------------------------------------------------------------------------------
# Parent: a process per (kernel, length), then the table


def run_worker(args, kernel: str, length: int) -> dict:
    command = [
        sys.executable, __file__, "--worker", kernel, "--lengths", str(length),
        *("--heads", str(args.heads), "--kv-heads", str(args.kv_heads), "--head-dim", str(args.head_dim)),
        *("--dtype", args.dtype, "--repeat", str(args.repeat)),
        "--document-shares", *(str(share) for share in args.document_shares),
    ]  # fmt: skip
    print(f"{kernel} at {length:,} tokens ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="ossft-bench-inductor-") as cache:
        # An empty inductor cache per process: the compile column is a cold compile, not an earlier run's files.
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        last_line = (done.stderr.strip().splitlines() or ["no message"])[-1].replace("|", "/")[:200]
        return {"failed": f"failed (exit {done.returncode}: {last_line})"}  # killed for memory: exit -9
    return json.loads(done.stdout.strip().splitlines()[-1])


def eager_skip_reason(args, length: int) -> str | None:
    """Why eager does not run at this length (its scores would not fit under --memory-cap), or None."""
    need = eager_peak_estimate(args, length)
    return f"skipped (needs {need / GIB:.3g} GiB)" if need > args.memory_cap * GIB else None


def measure_all(args) -> dict:
    results = {}
    for length in args.lengths:
        for kernel in KERNELS:
            skipped = eager_skip_reason(args, length) if kernel == "eager" else None
            results[(kernel, length)] = {"skipped": skipped} if skipped else run_worker(args, kernel, length)
    return results


def cells(result: dict, mask: str) -> tuple[str, str]:
    if mask not in result:
        return result.get("skipped") or result.get("failed", "?"), ""
    return f"{result[mask]['seconds'] * 1e3:,.1f}", f"{result[mask]['peak_bytes'] / 2**20:,.0f}"


def ratio(eager: dict, flex: dict, mask: str, field: str) -> str:
    if mask not in eager or mask not in flex:
        return ""
    if field == "peak_bytes" and flex[mask][field] < 2**20:
        return "flex < 1 MiB"  # a ratio over RSS noise would mean nothing
    return f"{eager[mask][field] / flex[mask][field]:.1f}x"


def table(results: dict, args) -> list[str]:
    lines = [
        "| length | mask | eager ms | eager peak MiB | flex ms | flex peak MiB | flex compile s "
        "| eager / flex time | eager / flex peak |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for length in args.lengths:
        eager, flex = results[("eager", length)], results[("flex", length)]
        for mask in MASKS:
            eager_ms, eager_mib = cells(eager, mask)
            flex_ms, flex_mib = cells(flex, mask)
            compile_s = f"{flex[mask]['first_seconds']:.1f}" if mask in flex else ""
            lines.append(
                f"| {length:,} | {mask} | {eager_ms} | {eager_mib} | {flex_ms} | {flex_mib} | {compile_s} "
                f"| {ratio(eager, flex, mask, 'seconds')} | {ratio(eager, flex, mask, 'peak_bytes')} |"
            )
    return lines


def section(results: dict, args, facts: dict) -> str:
    shares = ", ".join(f"{share:.0%}" for share in args.document_shares)
    documents = "; ".join(
        f"{length:,}: {', '.join(map(str, document_lengths(length, args.document_shares)))}" for length in args.lengths
    )
    every_time = "; ".join(
        f"{kernel} {length:,} {mask}: {', '.join(f'{t * 1e3:,.0f}' for t in result[mask]['all_seconds'])}"
        for (kernel, length), result in results.items()
        for mask in MASKS
        if mask in result
    )
    lines = [
        f"## Attention on CPU: eager against compiled flex, by length ({facts['date']})",
        "",
        f"- machine: {facts['cpu']}, {facts['cores']} cores usable; 1-minute load average {facts['load']} before the runs",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()),
        f"- command: `{facts['command']}`",
        f"- shape: one packed row, {args.heads} query heads, {args.kv_heads} kv heads, head_dim {args.head_dim}, "
        f"{args.dtype}, forward only (no_grad); documents of {shares} of the row (lengths {documents}); masks: "
        "gpt-oss's sliding window of 128 within each document, and full causal within each document",
        "- eager: transformers' gpt-oss `eager_attention_forward` (sinks included) with ossft's `eager_mask`; flex: "
        "`torch.compile(flex_attention)` with a BlockMask from ossft's `BlockMasks().get`",
        "- **compiled flex on CPU is forward-only and returns no lse, so the flex numbers are the kernel without "
        "ossft's sink factor**: they show how its cost grows with length, not GPU speed or the sink's cost",
        f"- each (kernel, length) in a fresh process; ms = median of {args.repeat} calls after one warm-up call "
        "(flex's warm-up is its compile, from an empty inductor cache for the first mask: the column 'flex compile s'); peak = getrusage ru_maxrss over the timed "
        "calls minus the RSS before them, the high-water mark reset first, so inputs and masks are not counted "
        "(eager's float mask is L x L x 4 bytes more, 64 MiB at 4,096 tokens)",
        f"- eager is skipped where its estimated peak ({EAGER_SCORE_COPIES} copies of the [heads, L, L] scores) "
        f"passes --memory-cap {args.memory_cap:g} GiB",
        "",
        *table(results, args),
        "",
        f"- every timed call (ms): {every_time}",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--heads", type=int, default=64)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--dtype", choices=tuple(DTYPE_BYTES), default="float32")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--document-shares", type=float, nargs="+", default=[0.4, 0.3, 0.2, 0.1])
    parser.add_argument("--memory-cap", type=float, default=16.0, help="GiB; eager runs only below it")
    parser.add_argument("--markdown", type=Path, help="append the results to this file (BENCHMARKS.md)")
    parser.add_argument("--worker", choices=KERNELS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.heads % args.kv_heads:
        parser.error(f"--heads ({args.heads}) must be a multiple of --kv-heads ({args.kv_heads})")
    if abs(sum(args.document_shares) - 1) > 1e-6:
        parser.error("--document-shares must add up to 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        args.length = args.lengths[0]
        return worker(args)
    facts = bench_facts(__file__, ("torch", "transformers"))
    results = measure_all(args)
    text = section(results, args, facts)
    print(text)
    if args.markdown:
        append_markdown(args.markdown, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
