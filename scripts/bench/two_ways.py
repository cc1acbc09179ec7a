"""What the benchmarks that compare two ways of one step share: each way in a fresh process (so its
peak memory is its own), timed after a warm-up, its results saved for the comparison.

A way's worker builds its step and calls `measure_step`, then `save_result`; the parent calls
`Comparison.run`, which starts the script once per way with `--worker WAY --result FILE` and the
script's arguments, compares what the ways saved, and prints (and appends) the section."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from data_prep import append_markdown, load_average, run_facts


def measure_step(step: Callable[[], object], device: str, repeat: int) -> tuple[dict, object]:
    """Seconds per `step()` (median of `repeat` after one warm-up) and the peak memory the steps added
    over what was there before (CPU: getrusage max RSS; CUDA: max_memory_allocated); and the last
    step's return value."""
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    last = step()
    times = []
    for _ in range(repeat):
        sync()
        started = time.perf_counter()
        last = step()
        sync()
        times.append(time.perf_counter() - started)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"seconds": statistics.median(times), "peak_bytes": peak, "device": device}, last


def save_result(measured: dict, saved: dict, path: Path) -> int:
    """The worker's end: tensors to compare go to `path`, the timings to stdout for the parent."""
    import torch

    torch.save(saved, path)
    print(json.dumps(measured))
    return 0


def run_ways(script: str, ways: tuple[str, ...], arguments: list[str]) -> tuple[dict, dict]:
    """Each way of `script` in its own process; (timings by way, saved tensors by way)."""
    import torch

    measured, saved = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for way in ways:
            result = Path(folder) / f"{way}.pt"
            command = [sys.executable, script, "--worker", way, "--result", str(result), *arguments]
            finished = subprocess.run(command, capture_output=True, text=True)
            if finished.returncode != 0:
                raise SystemExit(f"the {way} run failed:\n{finished.stderr[-3000:]}")
            measured[way] = json.loads(finished.stdout.strip().splitlines()[-1])
            saved[way] = torch.load(result)
    return measured, saved


def largest_relative_difference(a: dict, b: dict) -> float:
    """Over tensors of the same names: the largest |a - b| relative to the largest |a|, worst tensor."""
    return max((a[n] - b[n]).abs().max().item() / a[n].abs().max().item() for n in a)


def bench_facts(script: str, packages: tuple[str, ...]) -> dict:
    """run_facts, the GPU's name (None on CPU) and the load before the runs."""
    import torch

    return {
        **run_facts(script, packages),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load": load_average(),
    }


def add_common_arguments(parser, ways: tuple[str, str]) -> None:
    """--markdown for the user; --worker and --result, hidden, for the processes `run_ways` starts."""
    import argparse

    parser.add_argument("--markdown", type=Path, help="append the results to this file (BENCHMARKS.md)")
    parser.add_argument("--worker", choices=ways, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)


@dataclass(frozen=True)
class Comparison:
    """One benchmark of two ways: what its script supplies; `run(args)` is then the script's main."""

    script: str
    title: str  # the BENCHMARKS.md heading, without the date
    ways: tuple[str, str]  # (baseline, contender): ratios are contender / baseline
    packages: tuple[str, ...]  # whose versions the section names
    worker: Callable  # worker(args) -> exit code, in the process of one way
    worker_arguments: Callable  # worker_arguments(args) -> the options each worker process gets
    differences: Callable  # differences(baseline_saved, contender_saved) -> dict
    details: Callable  # details(args) -> the lines that say what was measured
    difference_note: Callable  # difference_note(differences) -> the line that says how far the ways differ

    def run(self, args) -> int:
        if args.worker:
            return self.worker(args)
        facts = bench_facts(self.script, self.packages)
        measured, saved = run_ways(self.script, self.ways, self.worker_arguments(args))
        diff = self.differences(*(saved[way] for way in self.ways))
        section = self.section(args, measured, diff, facts)
        print(section)
        if args.markdown:
            append_markdown(args.markdown, section)
        return 0

    def section(self, args, measured: dict, diff: dict, facts: dict) -> str:
        baseline, contender = (measured[way] for way in self.ways)
        gpu = baseline["device"] == "cuda"
        machine = facts["gpu"] if gpu else f"{facts['cpu']}, {facts['cores']} cores usable"
        lines = [
            f"## {self.title} ({facts['date']})",
            "",
            f"- machine: {machine}; 1-minute load average {facts['load']} before the runs",
            "- versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()),
            f"- command: `{facts['command']}`",
            *self.details(args),
            "",
            "| way | seconds per step | peak memory added (MiB) |",
            "| --- | ---: | ---: |",
            *(
                f"| {way} | {measured[way]['seconds']:.3f} | {measured[way]['peak_bytes'] / 2**20:,.0f} |"
                for way in self.ways
            ),
            "",
            f"- {self.ways[1]} / {self.ways[0]}: time **{contender['seconds'] / baseline['seconds']:.2f}**, "
            f"peak memory added **{contender['peak_bytes'] / max(baseline['peak_bytes'], 1):.2f}**",
            self.difference_note(diff),
            "",
        ]
        return "\n".join(lines)
