"""The expert-LoRA benchmark runs both ways end to end at small dimensions and finds them equal."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def test_expert_lora_benchmark_compares_both_ways(tmp_path):
    markdown = tmp_path / "bench.md"
    command = [
        sys.executable, "scripts/bench/expert_lora.py", "--experts", "4", "--hidden", "64", "--tokens", "32",
        "--repeat", "1", "--markdown", str(markdown),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    section = markdown.read_text()
    assert "## Expert LoRA: PEFT's stacked delta against the routed one, one layer" in section
    for way in ("stacked", "routed"):
        assert re.search(rf"\| {way} \| \d+\.\d{{3}} \| -?[\d,]+ \|", section), section
    found = re.search(r"output (\S+), LoRA gradients (\S+) ", section)
    assert found and float(found[1]) < 1e-5 and float(found[2]) < 1e-4, section  # float32: rounding only
