"""The step-time benchmark runs end to end (its numbers go to BENCHMARKS.md, never into a test)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def test_step_benchmark_runs_both_trainers(tmp_path):
    markdown = tmp_path / "bench.md"
    command = [
        sys.executable,
        "scripts/bench/step_overhead.py",
        "--steps",
        "7",
        "--repeat",
        "1",
        "--markdown",
        str(markdown),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    section = markdown.read_text()
    assert re.search(r"\| bare TRL SFTTrainer \| \d+\.\d \|", section)
    assert re.search(r"\| ossft \| \d+\.\d \|", section)
    assert re.search(r"ossft / TRL: \*\*\d+\.\d{3}\*\* \(goal: at most 1\.05: (met|not met)\)", section)
