"""The MXFP4-experts benchmark runs both modes end to end on a small MXFP4 checkpoint: each measures a
step, the MXFP4 one rests in less memory, and both start from the same loss."""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_bench_script

pytestmark = pytest.mark.bench

NUMBER = r"-?[\d,]+\.\d+"


def test_mxfp4_experts_benchmark_measures_both_modes(tmp_path):
    section = run_bench_script("mxfp4_experts.py", tmp_path / "bench.md", "--tiny", "--seqs", "64")
    assert "## MXFP4 experts against bf16 experts: a LoRA step at tiny widths, 2 layers" in section
    assert "scripts/bench/mxfp4_experts.py --tiny --seqs 64 --markdown" in section  # the command, as typed
    rows = {}
    for mode in ("bf16", "mxfp4"):
        # seq | mode | at rest | peak | peak - rest | peak - before | plan | s / step | first loss
        found = re.search(
            rf"^\| 64 \| {mode} \| ({NUMBER}) \| ({NUMBER}) \| ({NUMBER}) \| ({NUMBER}) \| ({NUMBER}|n/a) "
            rf"\| ({NUMBER}) \| ({NUMBER}) \|$",
            section,
            re.MULTILINE,
        )
        assert found, section
        rows[mode] = found.groups()
    rest = {mode: float(row[0]) for mode, row in rows.items()}
    peak = {mode: float(row[1]) for mode, row in rows.items()}
    # 2 layers x 64 experts x 3 x 512 x 512 weights: 0.19 GiB in bf16, 0.05 GiB as MXFP4
    assert rest["mxfp4"] < rest["bf16"], section
    assert all(peak[mode] >= rest[mode] for mode in rest), section
    assert rows["bf16"][4] != "n/a", section  # the plan always models bf16 experts
    # LoRA's B starts at zero and MXFP4 holds exactly the weights the load dequantized: the same logits
    assert rows["bf16"][6] == rows["mxfp4"][6], section
    assert re.search(rf"time mxfp4 / bf16 by seq: \*\*64: {NUMBER}\*\*", section), section
    extrapolated = re.search(rf"^\| 64 \|(?: {NUMBER} \|){{4}} ({NUMBER}) \| ({NUMBER}) \|$", section, re.MULTILINE)
    assert extrapolated and float(extrapolated[1]) < 1 and float(extrapolated[2]) < 1, section
