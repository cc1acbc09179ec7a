"""The LM-head benchmark runs both ways end to end at small dimensions and finds them equal."""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_bench_script

pytestmark = pytest.mark.bench


def test_lm_head_benchmark_compares_both_ways(tmp_path):
    args = ("--tokens", "64", "--hidden", "32", "--vocab", "2048")
    section = run_bench_script("lm_head.py", tmp_path / "bench.md", *args)
    assert "## Loss over the vocabulary: full logits against TRL's fused LM head" in section
    assert "- one copy of the logits would be 0 MiB" in section  # 64 x 2048 x 4 bytes
    for way in ("full", "fused"):
        assert re.search(rf"\| {way} \| \d+\.\d{{3}} \| -?[\d,]+ \|", section), section
    found = re.search(r"loss (\S+), gradients of the 17 trained tensors (\S+)", section)
    assert found and float(found[1]) < 1e-5 and float(found[2]) < 1e-4, section  # float32: rounding only
