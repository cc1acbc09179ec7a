"""scripts/bench/gpu_check.py: its CPU dry run takes every part end to end on the tiny shape, a part
that fails or hangs leaves the other parts' rows in the section, and the rows only a GPU produces
(peak memory, an out-of-memory, a search the time box ended) make a readable section."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, run_bench_script

pytestmark = pytest.mark.bench

DRY_RUN_NOTICE = "**CPU dry run: not GPU numbers.**"


def parts_of(section: str) -> dict[str, str]:
    """Each part's text under its '### (x)' heading, by letter."""
    pieces = re.split(r"^### \((\w)\) ", section, flags=re.M)
    return {pieces[i]: pieces[i + 1] for i in range(1, len(pieces), 2)}


def table_rows(text: str) -> list[list[str]]:
    """The cells of the first markdown table's data rows."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def is_number(cell: str) -> bool:
    return re.fullmatch(r"[\d,]+(\.\d+)?(e[-+]\d+)?%?", cell) is not None


def test_dry_run_takes_every_part_end_to_end(tmp_path):
    section = run_bench_script("gpu_check.py", tmp_path / "bench.md", "--cpu-dry-run", "--out", str(tmp_path / "out"))
    assert section.count("## GPU check: gpt-oss-tiny shape on CPU") == 1
    assert DRY_RUN_NOTICE in section and "Failed" not in section and "Not run" not in section
    parts = parts_of(section)
    assert list(parts) == ["a", "b", "c", "d", "e"]  # in the letters' order, though (e) runs before (d)

    kernel = table_rows(parts["a"])
    assert [row[:2] for row in kernel] == [["check_kernel", "512"], ["packed", "1,024"], ["packed", "2,048"]]
    assert all(row[5] == "pass" and is_number(row[3]) and is_number(row[4]) for row in kernel), kernel

    padded, packed = table_rows(parts["b"])
    assert padded[:2] == ["padded", "eager"] and packed[:2] == ["packed", "ossft_flex"]
    assert padded[2] == packed[2] == "256"  # the same real tokens per step
    assert int(padded[3].replace(",", "")) > 256 and packed[3] == "256"  # padding computed; packed rows exactly full
    assert all(is_number(cell) for cell in padded[2:8] + packed[2:8]), (padded, packed)
    assert re.search(r"packed \+ ossft_flex / padded \+ eager tokens/s: \*\*\d+\.\d\d\*\*", parts["b"])

    memory = table_rows(parts["c"])
    assert [row[:2] for row in memory] == [["eager", "256"], ["ossft_flex", "256"], ["ossft_flex", "1,024"]]
    assert all(row[2] == "n/a" and is_number(row[3]) and is_number(row[6]) for row in memory), memory

    longest = table_rows(parts["d"])
    assert [row[:2] for row in longest] == [["512", "trains"], ["1,024", "trains"]]
    assert "Longest: **1,024 tokens**, the cap" in parts["d"]
    assert re.search(r"`ossft plan`'s estimate, .*: [\d,]+ tokens\.", parts["d"])

    bf16, mxfp4 = table_rows(parts["e"])
    assert [bf16[0], mxfp4[0]] == ["bf16", "mxfp4"]
    assert all(is_number(cell) for cell in bf16[1:4] + mxfp4[1:4]), (bf16, mxfp4)  # no GPU memory on CPU
    assert re.search(r"MXFP4 / bf16: tokens/s \*\*\d+\.\d\d\*\*, peak reserved n/a", parts["e"])
    assert (tmp_path / "out" / "section.md").read_text(encoding="utf-8") == section


def test_a_failing_or_hanging_part_leaves_the_others_rows(tmp_path):
    markdown = tmp_path / "bench.md"
    markdown.write_text("# Benchmarks\n\nearlier sections\n", encoding="utf-8")
    args = ["--cpu-dry-run", "--parts", "a,b,c", "--out", str(tmp_path / "out")]
    args += ["--force-failure", "a:hang", "--time-box", "a=3", "--force-failure", "c"]
    text = run_bench_script("gpu_check.py", markdown, *args)
    assert text.startswith("# Benchmarks\n\nearlier sections\n\n## GPU check:")  # appended, nothing lost
    parts = parts_of(text)
    assert "**Failed:** stopped at its time box of 3 s" in parts["a"]
    assert "**Failed:** RuntimeError: forced failure of part (c) by --force-failure" in parts["c"]
    assert "**Not run:** not in --parts." in parts["d"] and "**Not run:** not in --parts." in parts["e"]
    rows = table_rows(parts["b"])  # the part between the two failures ran in full
    assert [row[:2] for row in rows] == [["padded", "eager"], ["packed", "ossft_flex"]]
    assert all(is_number(cell) for row in rows for cell in row[2:8]), rows


def gpu_like_outcomes(Outcome) -> dict:
    """Records as a GPU run writes them: peak memory, an out-of-memory, a search the time box ended."""
    kernel = {"batch": "check_kernel", "tokens": 512, "documents": 5, "output_error": 3e-3}
    kernel |= {"gradient_error": 1.2e-2, "passed": True, "seconds": 31.0}
    run = {"tokens_per_second": 41_000.0, "mfu": 0.21, "step_seconds": 0.1, "first_step_seconds": 38.0}
    run |= {"real_tokens_per_step": 4096, "computed_tokens_per_step": 8192, "peak_allocated_gib": 14.2}
    run |= {"peak_reserved_gib": 16.0}
    memory = {"attention": "ossft_flex", "seq": 4096, "plan_allocated_gib": 13.0, "plan_reserved_gib": 15.8}
    return {
        "a": Outcome([{"row": kernel}, {"row": {"batch": "packed", "tokens": 16384, "error": "OutOfMemoryError: x"}}]),
        "b": Outcome([{"row": {**run, "attention": "eager", "packed": False}}], error="RuntimeError: boom"),
        "c": Outcome([{"row": memory | run}, {"row": {**memory, "seq": 16384, "error": "OutOfMemoryError: y"}}]),
        "d": Outcome(
            [{"plan": {"longest": 98304, "gpu_gib": 79.6}}, {"row": {"seq": 32768, "fits": True, "seconds": 50}}]
            + [{"row": {"seq": 65536, "fits": True, "seconds": 70, "peak_reserved_gib": 60.5}}]
            + [{"summary": {"longest": 65536, "stopped": True}}]
        ),
        "e": Outcome(
            [{"row": {**run, "experts": "bf16"}}]
            + [{"row": {**run, "experts": "mxfp4", "tokens_per_second": 36_900.0, "peak_reserved_gib": 8.0}}]
        ),
    }


def test_gpu_rows_make_a_readable_section(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts" / "bench"))
    import gpu_check
    import gpu_check_report

    args = gpu_check.parse_args(["--markdown", "BENCHMARKS.md"])
    settings = gpu_check.settings_for(args)
    gpu = {"name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.6, "driver": "580.159.04"}
    section = gpu_check_report.report(settings, gpu_like_outcomes(gpu_check.Outcome), gpu, 500.0, REPO / "x.py")
    assert "dry run" not in section and "on NVIDIA H100 80GB HBM3 (" in section
    assert "4 of its 24 layers: hidden 2880, 64 heads / 8 kv heads, head_dim 64, 32 experts top-4" in section
    parts = parts_of(section)
    assert table_rows(parts["a"])[1][:3] == ["packed", "16,384", "failed: OutOfMemoryError: x"]
    assert table_rows(parts["b"])[0][4:] == ["41,000", "21.00%", "0.100", "38.0", "14.2", "16.0"]
    assert parts["b"].rstrip().endswith("**Failed:** RuntimeError: boom")
    measured, out_of_memory = table_rows(parts["c"])
    assert measured == ["ossft_flex", "4,096", "14.2", "13.0", "1.09", "16.0", "15.8"]
    assert out_of_memory[:4] == ["ossft_flex", "16,384", "failed: OutOfMemoryError: y", "13.0"]
    assert "Longest: **at least 65,536 tokens** (the time box ended the search)." in parts["d"]
    assert "on a 79.6 GiB GPU: 98,304 tokens." in parts["d"]
    assert table_rows(parts["e"])[1] == ["mxfp4", "36,900", "0.100", "38.0", "14.2", "8.0"]
    assert "MXFP4 / bf16: tokens/s **0.90**, peak reserved **0.50**, peak allocated **1.00**" in parts["e"]

    killed = gpu_like_outcomes(gpu_check.Outcome)
    killed["d"] = gpu_check.Outcome(killed["d"].records[:3], error="stopped at its time box of 150 s")
    parts = parts_of(gpu_check_report.report(settings, killed, gpu, 500.0, REPO / "x.py"))
    assert "Longest so far: **at least 65,536 tokens**." in parts["d"] and "**Failed:** stopped at its" in parts["d"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_a_gpu_only_the_dry_run_runs(tmp_path):
    done = subprocess.run(
        [sys.executable, "scripts/bench/gpu_check.py", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "run with --cpu-dry-run" in done.stderr
