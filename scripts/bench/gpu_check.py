"""One-command GPU check of ossft on one H100 or H200: under ten minutes from a bare machine.

Five parts, each in a process of its own with its own time box, so that a part that fails (out of
memory, a compile error, a hang) is recorded as failed with its error's first line and the next part
still runs; the rows a part finished before it failed are kept. They run in the order a, b, c, e, d:
(d) takes whatever time is left, so it goes last.

  (a) ossft_flex's compiled kernel against eager attention, bf16, forward and backward, sinks included:
      ossft.model.sink_attention.check_kernel (512 tokens), then packed batches of 4k and 16k tokens;
  (b) LoRA training steps on the gpt-oss-20b shape with 4 of its 24 layers: tokens/s and MFU, padded
      examples under eager attention against the same examples packed under ossft_flex (same real tokens);
  (c) peak memory (torch.cuda.max_memory_allocated / _reserved) against `ossft plan`'s estimate of the
      same shape, layers and length (ossft.launch.memory.estimate), at 4k and 16k tokens;
  (d) the longest length ossft_flex trains, doubling then bisecting, one process per length
      (gpu_lora.py --longest), for what the ten minutes leave; and the plan's answer to the same question;
  (e) (b)'s packed ossft_flex LoRA steps with the frozen experts kept in MXFP4 (model.mxfp4_experts,
      gpu_lora.py --mxfp4-experts) against the same in bf16: tokens/s, peak reserved and allocated memory,
      and their ratios; its time box comes out of what (d) had before it.

It writes ONE section to --markdown (built in full, then renamed into place) and to --out/section.md.
--cpu-dry-run runs the same parts on CPU with the tiny shape and tiny lengths in under two minutes
(tests/test_bench_gpu_check.py); its section says it holds no GPU numbers. Compiled flex has no
backward on CPU, so the dry run trains ossft_flex through flex's unfused path with torch's CPU refusal
lifted in its own processes only (gpu_lora.allow_flex_backward_on_cpu).

Running it on the device machine (the session tool `run`; nothing there reaches the internet). Its
image has torch 2.11, an older transformers (5.17) and huggingface_hub (1.33), accelerate 1.15, and no
trl, datasets or pydantic; `scripts/bench/gpu_check_wheels.sh` downloads, here, requirements.lock's
versions of what it lacks or holds too old (transformers, trl, peft, accelerate, datasets and
huggingface_hub with their own missing dependencies, pydantic), as Python 3.12 x86-64 wheels, into the
git-ignored wheels/ (24 wheels, 28 MB). ossft itself needs no install: the scripts put the repo on sys.path.

    bash scripts/bench/gpu_check_wheels.sh                       # here, once

then `run` with carry ["wheels"], timeout_s 600, and the command

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site wheels/*.whl && export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 && python3 scripts/bench/gpu_check.py --markdown BENCHMARKS.md --out /tmp/gpu-check; cp /tmp/gpu-check/section.md /tmp/gpu-check/*.log $OUT/

and append the returned section.md to BENCHMARKS.md here. The parts' logs come back beside it. The
install takes seconds; the check itself stops at --total-seconds (510 by default; (d) takes what the
others leave), so the call ends in about nine minutes, machine start not counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import gpu_check_parts as parts  # noqa: E402
from gpu_check_report import report  # noqa: E402

KILL_GRACE = 5  # seconds past a part's time box before its processes are killed
LOG_LINES_SHOWN = 15  # of a failed part's log, on stderr


@dataclasses.dataclass
class Outcome:
    records: list[dict]
    error: str | None = None  # why the part failed, or was not run
    seconds: float = 0.0
    ran: bool = True

    def of(self, kind: str) -> list:
        return [r[kind] for r in self.records if kind in r]


def settings_for(args) -> parts.Settings:
    chosen = dict(parts.DRY_SETTINGS if args.cpu_dry_run else parts.GPU_SETTINGS)
    chosen["time_boxes"] = {**chosen["time_boxes"], **args.time_box}
    if args.layers and not args.cpu_dry_run:
        chosen["layers"] = args.layers
    if args.total_seconds:
        chosen["total_seconds"] = args.total_seconds
    return parts.Settings(**chosen, out=str(args.out), peak_tflops=args.peak_tflops, dry_run=args.cpu_dry_run)


def force_failure(args, part: str) -> None:
    """--force-failure PART[:hang]: what tests use to show one part's failure leaves the others intact."""
    for forced in args.force_failure:
        wanted, _, how = forced.partition(":")
        if wanted != part:
            continue
        if how == "hang":
            time.sleep(10**6)
        raise RuntimeError(f"forced failure of part ({part}) by --force-failure")


def run_part_here(args) -> int:
    """The child: one part, its rows to --rows-file as they come."""
    rows = parts.Rows(Path(args.rows_file))
    try:
        if args.cpu_dry_run:
            parts.gpu_lora.allow_flex_backward_on_cpu()
        force_failure(args, args.run_part)
        device = "cpu" if args.cpu_dry_run else "cuda"
        parts.PARTS[args.run_part](settings_for(args), rows, device, args.part_seconds)
    except BaseException as error:  # noqa: BLE001 - recorded, whatever it is; the parent goes on
        rows.write("error", parts.first_line(error))
        traceback.print_exc()
        return 1
    rows.write("done", True)
    return 0


def child_environment(dry_run: bool) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TRANSFORMERS_VERBOSITY": "error"}
    if dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a dry run stays on CPU, even on a GPU machine
        # One thread: with a second process on a 2-core machine, two spinning OpenMP threads made the
        # tiny model's steps 100x slower (5 s instead of 0.05 s), and the dry run overran its box.
        env["OMP_NUM_THREADS"] = "1"
    return env


def run_part(part: str, seconds: float, args, out: Path) -> Outcome:
    """Run one part in its own process group, killed whole (probes and compile workers too) at its box."""
    rows_file, log = out / f"part-{part}.jsonl", out / f"part-{part}.log"
    rows_file.unlink(missing_ok=True)
    command = [sys.executable, __file__, *args.argv, "--run-part", part, "--rows-file", str(rows_file)]
    command += ["--part-seconds", f"{seconds:.0f}"]
    started = time.monotonic()
    with log.open("w", encoding="utf-8") as output:
        child = subprocess.Popen(
            command, cwd=REPO, env=child_environment(args.cpu_dry_run), stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            code = child.wait(timeout=seconds + KILL_GRACE)
        except subprocess.TimeoutExpired:
            code = None
        try:  # also what outlives a finished part (compile workers): the next part's timings are its own
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.wait()
    outcome = Outcome(parts.Rows(rows_file).read(), seconds=time.monotonic() - started)
    errors = outcome.of("error")
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if code is None:
        outcome.error = f"stopped at its time box of {seconds:.0f} s (log: {log.name})"
    elif errors:
        outcome.error = errors[0]
    elif not outcome.of("done"):  # died without a word: a crash in native code, say
        outcome.error = f"exit code {code}: {lines[-1] if lines else 'no output'}"
    if outcome.error:
        # The device call returns the end of this process's output: the cause, if nothing else, comes back.
        print("\n".join(f"  | {line}" for line in lines[-LOG_LINES_SHOWN:]), file=sys.stderr)
    return outcome


def time_box(part: str, settings: parts.Settings, started: float) -> float:
    """The part's own box, never past the check's; (d) has none of its own and takes what is left."""
    left = settings.total_seconds - (time.monotonic() - started) - KILL_GRACE
    return min(float(settings.time_boxes.get(part, left)), left)


def append_atomically(path: Path, section: str) -> None:
    """The file with the section appended, written beside it and renamed over it: never half-written."""
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    separator = "" if not existing else "\n" if existing.endswith("\n") else "\n\n"
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(existing + separator + section, encoding="utf-8")
    os.replace(temporary, path)


def part_list(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in parts.PARTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part {unknown[0]}: choose among {', '.join(parts.PARTS)}")
    return chosen


def seconds_of_part(text: str) -> tuple[str, float]:
    part, _, seconds = text.partition("=")
    if part not in parts.PARTS or not seconds:
        raise argparse.ArgumentTypeError(f"expected PART=SECONDS with PART among {', '.join(parts.PARTS)}")
    return part, float(seconds)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", type=Path, help="append the section to this file (BENCHMARKS.md)")
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny shape on CPU: the code paths, no numbers")
    parser.add_argument("--out", type=Path, default=Path("/tmp/ossft-gpu-check"), help="logs and rows of each part")
    parser.add_argument("--parts", type=part_list, default=list(parts.PARTS), help="a subset, e.g. a,c")
    parser.add_argument("--layers", type=int, help="layers of the 20b shape (default 4; even)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100, H200: 989)")
    parser.add_argument("--total-seconds", type=float, help="the whole check's time box; (d) gets what is left")
    parser.add_argument(
        "--time-box", type=seconds_of_part, action="append", default=[], metavar="PART=SECONDS",
        help="one part's time box instead of the default",
    )  # fmt: skip
    parser.add_argument(
        "--force-failure", action="append", default=[], metavar="PART[:hang]", help="make a part fail or hang (tests)"
    )
    parser.add_argument("--run-part", choices=tuple(parts.PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--rows-file", help=argparse.SUPPRESS)
    parser.add_argument("--part-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.time_box = dict(args.time_box)
    args.argv = list(argv)
    if args.layers is not None and (args.layers < 2 or args.layers % 2):
        parser.error("--layers must be even: gpt-oss alternates sliding and full attention layers")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(argv if argv is not None else sys.argv[1:]))
    if args.run_part:
        return run_part_here(args)
    started = time.monotonic()
    gpu = None if args.cpu_dry_run else parts.gpu_facts()
    if gpu is None and not args.cpu_dry_run:
        print("no GPU here: run with --cpu-dry-run for the code paths on CPU", file=sys.stderr)
        return 2
    settings = settings_for(args)
    args.out.mkdir(parents=True, exist_ok=True)
    outcomes: dict[str, Outcome] = {}
    for part in parts.RUN_ORDER:
        if part not in args.parts:
            outcomes[part] = Outcome([], error="not in --parts", ran=False)
            continue
        seconds = time_box(part, settings, started)
        if part == "d" and seconds < settings.smallest_longest_box:
            outcomes[part] = Outcome([], error=f"{seconds:.0f} s left of the check's time box", ran=False)
            continue
        print(f"part ({part}): up to {seconds:.0f} s", file=sys.stderr, flush=True)
        outcomes[part] = run_part(part, seconds, args, args.out)
        verdict = f"failed: {outcomes[part].error}" if outcomes[part].error else "done"
        print(f"part ({part}): {verdict} in {outcomes[part].seconds:.0f} s", file=sys.stderr, flush=True)
    outcomes = {part: outcomes[part] for part in parts.PARTS}  # the section in the letters' order
    section = report(settings, outcomes, gpu, time.monotonic() - started, Path(__file__))
    print(section)
    (args.out / "section.md").write_text(section, encoding="utf-8")
    if args.markdown:
        append_atomically(args.markdown, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
