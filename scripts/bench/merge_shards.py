"""Benchmark: `ossft merge-shards` against `accelerate merge-weights` on the same FSDP2 sharded checkpoint (CPU).

One command does all of it:

1. writes a random gpt-oss-shaped model of about 2 GB in bf16 (the real architecture at hidden 1024, 16 experts,
   18 layers, vocab 32,768: every weight of a full fine-tune, no LoRA) and saves it as accelerate's FSDP2
   SHARDED_STATE_DICT writes it (`RUN/pytorch_model_fsdp_0/`, one `.distcp` per rank): two gloo processes,
   `fully_shard` per decoder layer then the root, accelerate's own `save_fsdp_model`, exactly as the tests
   make their checkpoints (tests/fsdp_checkpoint.py, reused here); `--checkpoint DIR` keeps it in DIR, and a
   later run with the same DIR reuses it;
2. runs `ossft merge-shards RUN --out A` (again with each `--max-shard-size SIZE` given) and `accelerate
   merge-weights RUN/pytorch_model_fsdp_0 B` (safetensors, its default), each in a process of its own, started
   from a small wrapper process of its own; the wrapper times the command (process start and imports included,
   as a user waits for them) and reads its peak RSS with `getrusage(RUSAGE_CHILDREN)`, the high-water mark of
   the largest process it waited for. That figure is a maximum over every child a process ever waited for, so
   each measurement gets a fresh wrapper;
3. checks that both outputs hold the same tensors (names, dtypes, shapes, bytes) as each other and as the
   random model the ranks loaded;
4. prints machine, versions, the command and a result table; `--write-benchmarks` appends the same section to
   BENCHMARKS.md.

MB/s is the checkpoint's bytes on disk (`pytorch_model_fsdp_0/`) divided by the wall time. With --repeat K the
runs are done K times, alternating which tool goes first; the best time and lowest peak of each are reported
(other work on the machine can only add to either), and, round by round, accelerate's time over ossft's with
their median (both tools of a round meet the same machine load). Dirty pages are written back (`sync`) before
every run, so a run does not pay for writing back the previous run's output; the checkpoint is read from the
page cache. Goals, from the performance issue: ossft's peak RSS at most 1/3 of accelerate's, and its MB/s at
least accelerate's.

Shard size. ossft streams each output shard (header first, then 128 MiB read batches), so its peak follows the
batch, not the shard; its default shard is 5 GiB, a single file for the 2 GB model. `--max-shard-size 256MiB`
also times the many-shard case that gpt-oss-20b (~42 GB in bf16, 9 shards) is in.

Usage (from the repository root; 2 cores, ~8 GB of RAM and ~10 GB of disk for the 2 GB model):

    .venv/bin/python scripts/bench/merge_shards.py --max-shard-size 256MiB --repeat 2 --write-benchmarks

`--tiny` builds a ~20 MB model instead (the test's mode).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ossft.checkpoints.layout import FSDP_MODEL_FOLDER

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "BENCHMARKS.md"

# gpt-oss's architecture (head_dim 64, 4 query heads per kv head, top-4 routing, expert width = hidden) at
# smaller widths. FULL is 2.04 GB in bf16: 18 x 106 MB layers (97% experts) and two 64 MiB vocab matrices,
# so, as in gpt-oss-20b, the largest tensors are a few percent of the model.
FULL = {"hidden_size": 1024, "num_local_experts": 16, "num_hidden_layers": 18, "vocab_size": 32768}
TINY = {"hidden_size": 256, "num_local_experts": 8, "num_hidden_layers": 4, "vocab_size": 8192}  # ~21 MB

# Runs in a fresh interpreter per measurement: argv = RESULT_JSON COMMAND... It imports no more than it needs,
# so the wrapper's own memory (forked before the exec) stays far below what is measured.
MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[2:]).returncode
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
with open(sys.argv[1], "w") as f:
    json.dump({"returncode": code, "seconds": seconds, "peak_rss": peak}, f)
"""


@dataclass
class Tool:
    name: str
    display: str  # the command as the table shows it
    command: list[str]
    out: Path
    seconds: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    failure: str | None = None  # the end of its output, when it failed


# ---------------------------------------------------------------------------------------------
# The checkpoint


def model_config(dims: dict):
    from transformers import GptOssConfig

    return GptOssConfig(
        intermediate_size=dims["hidden_size"],
        head_dim=64,
        num_attention_heads=dims["hidden_size"] // 64,
        num_key_value_heads=dims["hidden_size"] // 256,
        num_experts_per_tok=4,
        tie_word_embeddings=False,
        **dims,
    )


def build_checkpoint(folder: Path, dims: dict) -> Path:
    """`folder/run/pytorch_model_fsdp_0/`, saved by two gloo ranks from the random model in `folder/base`
    (config.json + model.safetensors), which recipe.yaml in `folder/run` names as the base model."""
    from tests.fsdp_checkpoint import RunSpec, write_fsdp_runs

    base, run = folder / "base", folder / "run"
    write_random_model(base, dims)
    # expected=False: the ranks save the base's weights as loaded (the fixture's noise and its copy of the
    # unsharded result are not needed: the base file is that copy).
    write_fsdp_runs([RunSpec(str(run), str(base), {".": 0}, dtype="bfloat16", expected=False)], timeout=3600)
    return run


def write_random_model(folder: Path, dims: dict) -> None:
    """config.json and one model.safetensors of seeded N(0, 0.02^2) bf16 weights (gpt-oss's initializer_range)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    config = model_config(dims)
    with torch.device("meta"):
        shapes = {name: t.shape for name, t in AutoModelForCausalLM.from_config(config).state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state = {
        name: (0.02 * torch.randn(shape, generator=generator)).to(torch.bfloat16) for name, shape in shapes.items()
    }
    config.save_pretrained(folder)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def checkpoint_facts(run: Path) -> dict:
    import math

    from ossft.checkpoints.dcp import read_model_tensors

    tensors = read_model_tensors(run / FSDP_MODEL_FOLDER)
    sizes = {name: math.prod(t.shape) * t.dtype.itemsize for name, t in tensors.items()}
    largest = max(sizes, key=sizes.get)
    config = json.loads((run.parent / "base" / "config.json").read_text())
    return {
        "disk_bytes": sum(p.stat().st_size for p in (run / FSDP_MODEL_FOLDER).iterdir() if p.is_file()),
        "distcp_files": len(list((run / FSDP_MODEL_FOLDER).glob("*.distcp"))),
        "tensors": len(tensors),
        "tensor_bytes": sum(sizes.values()),
        "dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values()}),
        "largest": (largest, list(tensors[largest].shape), sizes[largest]),
        "config": {k: config.get(k) for k in ("hidden_size", "num_hidden_layers", "num_local_experts", "vocab_size")},
    }


# ---------------------------------------------------------------------------------------------
# Timed runs


def tools(run: Path, work: Path, shard_sizes: list[str]) -> list[Tool]:
    """ossft with its default shard size, then once per `shard_sizes` value, then accelerate (always last)."""
    bin_dir = Path(sys.executable).parent

    def script(name: str) -> str:
        return str(bin_dir / name) if (bin_dir / name).is_file() else (shutil.which(name) or name)

    found = []
    for size in [None, *shard_sizes]:
        extra = ["--max-shard-size", size] if size else []
        out = work / f"out-ossft-{len(found)}"
        found.append(
            Tool(
                shlex.join(["ossft", *extra]),
                shlex.join(["ossft", "merge-shards", "RUN", "--out", "A", *extra]),
                [script("ossft"), "merge-shards", str(run), "--out", str(out), *extra],
                out,
            )
        )
    out = work / "out-accelerate"
    command = [script("accelerate"), "merge-weights", str(run / FSDP_MODEL_FOLDER), str(out)]
    found.append(Tool("accelerate", f"accelerate merge-weights RUN/{FSDP_MODEL_FOLDER} B", command, out))
    return found


def measure_once(tool: Tool, work: Path) -> dict:
    """One run of `tool` in a fresh wrapper process: its seconds and peak RSS, or its output when it failed."""
    shutil.rmtree(tool.out, ignore_errors=True)
    os.sync()  # the previous run's output is on disk before this one starts
    result, log = tool.out.with_suffix(".json"), tool.out.with_suffix(".log")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log.open("w") as output:
        subprocess.run(
            [sys.executable, "-c", MEASURE, str(result), *tool.command],
            env=env,
            stdout=output,
            stderr=output,
            check=True,
        )
    measured = json.loads(result.read_text())
    if measured["returncode"] != 0:
        measured["failure"] = log.read_text(errors="replace")[-3000:]
    return measured


def measure(tool_list: list[Tool], work: Path, repeat: int, check) -> str | None:
    """Each tool `repeat` times, alternating which goes first; `check()` compares the outputs of the first round.
    Returns what the check found (None when it could not run: a tool failed)."""
    checked = None
    for rep in range(repeat):
        order = tool_list if rep % 2 == 0 else tool_list[::-1]
        for tool in order:
            if tool.failure is not None:
                continue
            found = measure_once(tool, work)
            if "failure" in found:
                tool.failure = found["failure"]
                print(f"  round {rep + 1}/{repeat}: {tool.name} FAILED (exit {found['returncode']})", file=sys.stderr)
                continue
            tool.seconds.append(found["seconds"])
            tool.peaks.append(found["peak_rss"])
            print(
                f"  round {rep + 1}/{repeat}: {tool.name} {found['seconds']:.2f} s, "
                f"peak RSS {found['peak_rss'] / 2**20:.0f} MiB",
                file=sys.stderr,
            )
        if rep == 0 and all(t.failure is None for t in tool_list):
            checked = check()
            print(f"  outputs: {checked}", file=sys.stderr)
        for tool in tool_list:
            shutil.rmtree(tool.out, ignore_errors=True)
    return checked


def compare_outputs(ossft_dirs: list[Path], accelerate_dir: Path, original: Path) -> str:
    """Raises unless each of ossft's folders, accelerate's folder and the model the ranks loaded hold the same
    tensors (names, dtypes, shapes and bytes); reads one tensor at a time."""
    import torch
    from safetensors import safe_open

    from ossft.checkpoints.verify import saved_tensors

    def same(a, b) -> bool:
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))

    files = list(accelerate_dir.glob("*.safetensors"))
    if len(files) != 1:
        raise RuntimeError(f"accelerate wrote {[f.name for f in files]}, expected one model.safetensors")
    handles = {
        "accelerate's output": safe_open(str(files[0]), framework="pt"),
        "the original model": safe_open(str(original), framework="pt"),
    }
    for folder in ossft_dirs:
        names = set()
        for name, tensor in saved_tensors(folder):
            names.add(name)
            for other, handle in handles.items():
                if name not in handle.keys() or not same(tensor, handle.get_tensor(name)):
                    raise RuntimeError(f"{name} differs between ossft's output in {folder} and {other}")
        for other, handle in handles.items():
            if set(handle.keys()) != names:
                raise RuntimeError(f"ossft wrote {len(names)} tensors in {folder}, {other} holds {len(handle.keys())}")
    outputs = "ossft's output" if len(ossft_dirs) == 1 else f"each of ossft's {len(ossft_dirs)} outputs"
    return f"equal: the same {len(names)} tensors, byte for byte, in {outputs}, accelerate's and the original model"


# ---------------------------------------------------------------------------------------------
# Report

MERGE_PACKAGES = ("torch", "transformers", "accelerate", "safetensors")


def memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB RAM"
    except OSError:
        pass
    return "RAM unknown"


def report(tool_list: list[Tool], facts: dict, checked: str | None, meta: dict) -> str:
    mb = facts["disk_bytes"] / 1e6
    name, shape, size = facts["largest"]
    config = ", ".join(f"{k} {v}" for k, v in facts["config"].items() if v is not None)
    lines = [
        f"## Merging FSDP shards: a {_size(facts['disk_bytes'])} checkpoint, ossft vs accelerate ({meta['date']})",
        "",
        f"- machine: {meta['cpu']}, {meta['cores']} cores usable ({meta['cpu_count']} online), {meta['ram']}, "
        f"{meta['system']}; 1-minute load average {meta['load_before']} before the timed runs, {meta['load_after']} after",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- command: `{meta['command']}`",
        f"- checkpoint: random gpt-oss ({config}; full model, {', '.join(facts['dtypes'])}), saved by two gloo ranks "
        f"with fully_shard + accelerate's save_fsdp_model (SHARDED_STATE_DICT): {facts['distcp_files']} .distcp "
        f"files, {facts['disk_bytes']:,} bytes on disk, {facts['tensors']} tensors of {facts['tensor_bytes']:,} "
        f"bytes; the largest, {name} {shape}, {size / 2**20:.0f} MiB",
        "- method: each run a new process, started by a fresh wrapper that times it (imports included) and reads its "
        "peak RSS with getrusage(RUSAGE_CHILDREN); MB/s = checkpoint bytes on disk / seconds (1 MB = 10^6 bytes); "
        "`sync` before each run",
        "",
        "| run | command | seconds | MB/s | peak RSS (MiB) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for tool in tool_list:
        if tool.seconds:
            seconds, peak = min(tool.seconds), min(tool.peaks)
            lines.append(
                f"| {tool.name} | `{tool.display}` | {seconds:.2f} | {mb / seconds:.1f} | {peak / 2**20:.0f} |"
            )
        else:
            lines.append(f"| {tool.name} | `{tool.display}` | failed | - | - |")
    lines.append("")
    *ossft_runs, accelerate = tool_list
    for ossft in ossft_runs:
        if ossft.seconds and accelerate.seconds:
            memory = min(ossft.peaks) / min(accelerate.peaks)
            speed = min(accelerate.seconds) / min(ossft.seconds)
            lines.append(
                f"- {ossft.name} / accelerate: peak RSS **{memory:.2f}** (goal <= 0.33: "
                f"{'met' if memory <= 1 / 3 else 'not met'}), MB/s **{speed:.2f}x** (goal >= 1x: "
                f"{'met' if speed >= 1 else 'not met'})"
            )
    lines.append(f"- outputs: {checked}" if checked else "- outputs: not compared (a run failed)")
    for tool in tool_list:
        if tool.failure is not None:
            tail = " | ".join(line.strip() for line in tool.failure.strip().splitlines()[-6:])
            lines.append(f"- {tool.name} failed; the end of its output: `{tail}`")
    if max(len(t.seconds) for t in tool_list) > 1:
        each = "; ".join(
            f"{t.name} " + ", ".join(f"{s:.2f} s / {p / 2**20:.0f} MiB" for s, p in zip(t.seconds, t.peaks))
            for t in tool_list
        )
        lines.append(f"- best time and lowest peak of {max(len(t.seconds) for t in tool_list)} runs each: {each}")
        for ossft in ossft_runs:
            if len(ossft.seconds) == len(accelerate.seconds) > 1:
                # Within a round both ran back to back under the same machine load; between rounds the load
                # of a shared machine moves by more than the difference measured.
                paired = [a / o for a, o in zip(accelerate.seconds, ossft.seconds)]
                lines.append(
                    f"- {ossft.name}'s speed over accelerate's, round by round: "
                    f"{', '.join(f'{x:.2f}x' for x in paired)}; median **{statistics.median(paired):.2f}x**"
                )
    lines.append("")
    return "\n".join(lines)


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def append_section(path: Path, section: str) -> None:
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    with path.open("a", encoding="utf-8") as f:
        if existing and not existing.endswith("\n\n"):
            f.write("\n" if existing.endswith("\n") else "\n\n")
        f.write(section)


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Peak RSS and MB/s of `ossft merge-shards` against `accelerate merge-weights` on one FSDP2 "
        "sharded checkpoint of a ~2 GB gpt-oss-shaped model (CPU).",
        epilog="Example: .venv/bin/python scripts/bench/merge_shards.py --max-shard-size 256MiB --repeat 2 "
        "--write-benchmarks",
    )
    parser.add_argument("--tiny", action="store_true", help="a ~20 MB model instead of ~2 GB (for the test)")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="folder for the checkpoint: reused when it holds one this script built, else built there and kept "
        "(default: a temporary folder, deleted at the end)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each tool this many times; report the best (default 1)"
    )
    parser.add_argument(
        "--max-shard-size",
        action="append",
        default=[],
        metavar="SIZE",
        help="also time ossft with this --max-shard-size (e.g. 256MiB); repeatable. ossft always runs once with "
        "its default (5GiB) too",
    )
    parser.add_argument(
        "--write-benchmarks",
        nargs="?",
        type=Path,
        const=BENCHMARKS,
        metavar="FILE",
        help=f"append the result section to {BENCHMARKS.name} (or to FILE)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]
    from data_prep import load_average, run_facts
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    work = Path(tempfile.mkdtemp(prefix="ossft-bench-merge-"))
    try:
        meta = {**run_facts(__file__, MERGE_PACKAGES), "ram": memory_total()}
        home = args.checkpoint.resolve() if args.checkpoint is not None else work / "checkpoint"
        run = home / "run"
        if (run / FSDP_MODEL_FOLDER / ".metadata").is_file():
            print(f"reusing the checkpoint in {run}", file=sys.stderr)
        else:
            if home.exists() and any(home.iterdir()):
                print(f"error: {home} is not empty and holds no checkpoint this script built", file=sys.stderr)
                return 2
            print(f"building the {'tiny' if args.tiny else '~2 GB'} checkpoint in {run} ...", file=sys.stderr)
            build_checkpoint(home, TINY if args.tiny else FULL)
        facts = checkpoint_facts(run)
        print(
            f"checkpoint: {facts['disk_bytes'] / 1e6:,.1f} MB in {facts['distcp_files']} .distcp files; timing ...",
            file=sys.stderr,
        )
        tool_list = tools(run, work, args.max_shard_size)
        *ossft_runs, accelerate = tool_list
        original = home / "base" / "model.safetensors"
        meta["load_before"] = load_average()
        checked = measure(
            tool_list, work, args.repeat, lambda: compare_outputs([t.out for t in ossft_runs], accelerate.out, original)
        )
        meta["load_after"] = load_average()

        section = report(tool_list, facts, checked, meta)
        print(section)
        if args.write_benchmarks is not None:
            append_section(args.write_benchmarks, section)
            print(f"appended to {args.write_benchmarks}", file=sys.stderr)
        return 0 if all(t.failure is None for t in ossft_runs) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
