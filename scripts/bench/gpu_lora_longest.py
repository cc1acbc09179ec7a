"""`gpu_lora.py --longest`: the longest sequence ossft's configuration trains at micro-batch 1.

Each length runs in a fresh process (`gpu_lora.py --probe-one`): an out-of-memory leaves the allocator
in no state to go on. The search is ossft.launch.memory's own (doubling, then bisecting), the one
`ossft plan` runs over its estimates, so a measured length and a planned one are found the same way.
scripts/bench/gpu_check.py part (d) calls `longest_sequence` with a time box.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

GPU_LORA = Path(__file__).with_name("gpu_lora.py")


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

    # CUDA raises torch.OutOfMemoryError (compiled code may re-raise it as text); the CPU allocator a
    # RuntimeError, and Python a MemoryError.
    text = str(error)
    memory_words = ("can't allocate memory", "CUDA out of memory")
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or any(w in text for w in memory_words)


def probe_once(args, shape, device: str, run_config) -> dict:
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


class TimeBoxReached(Exception):
    """--longest ran out of its --time-box before the search ended."""


def probe(args, seq: int, timeout: float | None = None) -> dict:
    command = [sys.executable, str(GPU_LORA), "--probe-one", *args.argv, "--seq", str(seq)]
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise TimeBoxReached(f"the run at seq {seq} outlasted the time box") from error
    if done.returncode != 0:
        # The exception's own line first: callers that keep one line of an error keep the cause.
        last = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "no output")
        raise SystemExit(f"the run at seq {seq} failed: {last}\n{done.stderr[-3000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    found["seconds"] = time.monotonic() - started
    print(f"  seq {seq}: {'trains' if found['fits'] else 'out of memory'}", file=sys.stderr)
    return found


@dataclasses.dataclass
class Search:
    best: dict | None  # the longest run that trained
    attempts: list[dict]
    stopped: bool = False  # the time box ended it: `best` is a lower bound


def longest_sequence(args, on_attempt=None) -> Search:
    """The longest run that trained, by ossft.launch.memory's search (doubling from --seq, then bisecting
    down to --resolution, never past --max-seq), and every attempt; `on_attempt` sees each as it ends.
    With --time-box, no length starts that would not end inside it at the pace of the slowest so far."""
    from ossft.launch.memory import longest_passing

    search = Search(None, [])
    deadline = time.monotonic() + args.time_box if args.time_box else None

    def trains(seq: int) -> bool:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left < max([a["seconds"] for a in search.attempts] + [0]):
            raise TimeBoxReached(f"no time left for seq {seq}")
        search.attempts.append(probe(args, seq, left))
        if on_attempt:
            on_attempt(search.attempts[-1])
        return search.attempts[-1]["fits"]

    try:
        longest_passing(trains, start=args.seq, step=args.resolution, cap=args.max_seq)
    except TimeBoxReached:
        search.stopped = True
    search.best = max((a for a in search.attempts if a["fits"]), key=lambda a: a["seq"], default=None)
    return search


def longest_report(search: Search, args, device_line: str) -> str:
    attempts = sorted(search.attempts, key=lambda a: a["seq"])
    tried = ", ".join(f"{a['seq']} {'ok' if a['fits'] else 'OOM'}" for a in attempts)
    limit = f"capped at {args.memory_limit:g} GiB" if args.memory_limit else "the whole device"
    lines = [
        f"## Longest sequence, LoRA on the gpt-oss-{args.shape} shape ({datetime.date.today().isoformat()})",
        "",
        f"- Device: {device_line.replace(';', f', {limit};', 1)}.",
        f"- Command: `python scripts/bench/gpu_lora.py {' '.join(args.argv)}`",
        f"- ossft's configuration, attention {args.attn}, micro-batch 1, 2 steps per length, each length in a "
        "fresh process; random bf16 weights, random tokens, every token trained.",
        f"- Tried: {tried}.",
        "",
    ]
    best = search.best
    if best is None:
        lines.append(f"Not even {args.seq:,} tokens trained{' in the time box' if search.stopped else ''}.")
        return "\n".join(lines + [""])
    reserved = best.get("peak_reserved_gib", float("nan"))
    if search.stopped:
        qualifier = f" at least (--time-box {args.time_box:g} s ended the search)"
    elif any(not a["fits"] for a in attempts):
        qualifier = ""
    else:
        qualifier = f" (no length up to --max-seq {args.max_seq:,} ran out)"
    lines.append(f"Longest: **{best['seq']:,} tokens**{qualifier}, peak reserved {reserved:.1f} GiB.")
    return "\n".join(lines + [""])
