"""The expert-LoRA benchmark runs both ways end to end at small dimensions and finds them equal."""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_bench_script

pytestmark = pytest.mark.bench


def test_expert_lora_benchmark_compares_both_ways(tmp_path):
    args = ("--experts", "4", "--hidden", "64", "--tokens", "32", "--repeat", "1")
    section = run_bench_script("expert_lora.py", tmp_path / "bench.md", *args)
    assert "## Expert LoRA: PEFT's stacked delta against the routed one, one layer" in section
    for way in ("stacked", "routed"):
        assert re.search(rf"\| {way} \| \d+\.\d{{3}} \| -?[\d,]+ \|", section), section
    found = re.search(r"output (\S+), LoRA gradients (\S+) ", section)
    assert found and float(found[1]) < 1e-5 and float(found[2]) < 1e-4, section  # float32: rounding only
