"""scripts/bench/data_prep.py runs end to end on a small input (the real tokenizer; no timing asserted)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_bench_script
from tests.o200k import gpt_oss_tokenizer_available

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(not gpt_oss_tokenizer_available(), reason="needs the real gpt-oss tokenizer fixtures"),
]

SCRIPT = REPO / "scripts" / "bench" / "data_prep.py"
NUMBER = r"\d+(?:\.\d+)?"


def test_benchmark_runs_and_reports_three_rows(tmp_path):
    out = run_bench_script("data_prep.py", tmp_path / "bench.md", "--conversations", "20", "--target-tokens", "200")

    rows = {}
    for name in ("ossft", r"ossft \(cached\)", "TRL"):
        match = re.search(rf"^\| {name} \| ({NUMBER}) \| (\d+) \| (\d+) \| ({NUMBER}) \| ({NUMBER}) \|$", out, re.M)
        assert match, f"no result row for {name} in:\n{out}"
        seconds, examples, tokens, per_s, _ = match.groups()
        assert float(seconds) > 0 and int(tokens) > 0 and float(per_s) > 0
        rows[name] = (int(examples), int(tokens))
    # The cached run returns exactly what the first run made; every conversation gives >= 1 example.
    assert rows["ossft"] == rows[r"ossft \(cached\)"]
    assert rows["ossft"][0] >= 20 and rows["TRL"][0] == 20
    assert re.search(rf"ossft / TRL tokens/s: \*\*{NUMBER}x\*\*", out)
    assert re.search(rf"first / cached ossft time: \*\*{NUMBER}x\*\*", out)
    assert "--conversations 20 --target-tokens 200" in out

    assert out.startswith("# Benchmarks") and out.count("## Data preparation") == 1


def test_bad_flag_is_refused():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--conversations", "0"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "--conversations must be at least 1" in done.stderr
