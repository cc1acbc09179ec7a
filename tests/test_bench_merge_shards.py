"""scripts/bench/merge_shards.py runs end to end on a tiny FSDP2 checkpoint (no timing asserted)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_bench_script

pytestmark = pytest.mark.bench

SCRIPT = REPO / "scripts" / "bench" / "merge_shards.py"
NUMBER = r"\d+(?:\.\d+)?"


def test_benchmark_runs_both_tools_and_their_outputs_match(tmp_path):
    args = ("--tiny", "--repeat", "2")
    out = run_bench_script("merge_shards.py", tmp_path / "bench.md", *args, markdown_flag="--write-benchmarks")

    rows = {
        "ossft": r"`ossft merge-shards RUN --out A`",
        "accelerate": r"`accelerate merge-weights RUN/pytorch_model_fsdp_0 B`",
    }
    for name, command in rows.items():
        match = re.search(rf"^\| {name} \| {command} \| ({NUMBER}) \| ({NUMBER}) \| (\d+) \|$", out, re.M)
        assert match, f"no result row for {name} in:\n{out}"
        seconds, per_s, peak_mib = match.groups()
        assert float(seconds) > 0 and float(per_s) > 0 and int(peak_mib) > 50  # python + torch alone is more
    # Both merged folders hold exactly the checkpoint's tensors, equal to each other and to the model saved.
    saved = re.search(r"2 \.distcp files, [\d,]+ bytes on disk, (\d+) tensors of", out)
    equal = re.search(r"^- outputs: equal: the same (\d+) tensors, byte for byte", out, re.M)
    assert saved and equal and saved[1] == equal[1], out
    assert re.search(rf"^- ossft / accelerate: peak RSS \*\*{NUMBER}\*\* .* MB/s \*\*{NUMBER}x\*\*", out, re.M)
    rounds = re.search(
        r"^- ossft's speed over accelerate's, round by round: (\S+)x, (\S+)x; median \*\*(\S+)x\*\*", out, re.M
    )
    assert rounds and abs((float(rounds[1]) + float(rounds[2])) / 2 - float(rounds[3])) < 0.006, out
    assert "failed" not in out
    assert "--tiny --repeat 2 --write-benchmarks" in out


def test_bad_flag_is_refused():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--repeat", "0"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "--repeat must be at least 1" in done.stderr
