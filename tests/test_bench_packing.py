"""The padding-efficiency and CPU attention benchmarks run end to end at small sizes, and their numbers
are the ones recomputed here from the same lengths."""

from __future__ import annotations

import math
import re
import sys

import pytest

from tests.conftest import REPO, run_bench_script

pytestmark = pytest.mark.bench

ROW = re.compile(
    r"^\| (?P<mode>[^|]+?) \| (?P<mb>\d+) \| (?P<efficiency>[\d.]+) \| (?P<computed>[\d,]+) \|", re.MULTILINE
)
FILE_LENGTHS = [5, 700, 33, 512, 90, 1000, 64, 257, 300, 18, 640, 128, 129]  # 700 and 1000 cut to 512
MAX_LENGTH = 512
SEED = 3


def rows_of(part: str) -> dict[tuple[str, int], tuple[float, int]]:
    return {
        (m["mode"], int(m["mb"])): (float(m["efficiency"]), int(m["computed"].replace(",", "")))
        for m in ROW.finditer(part)
    }


def distribution(section: str, title: str) -> dict:
    start = section.index(f"**{title}**")
    end = section.find("\n**", start + 1)
    return rows_of(section[start : end if end != -1 else None])


def padded_tokens(lengths: list[int], micro_batch: int, multiple: int = 1) -> int:
    """What padding each micro-batch to its longest example (rounded up to `multiple`) computes."""
    total = 0
    for start in range(0, len(lengths), micro_batch):
        batch = lengths[start : start + micro_batch]
        total += len(batch) * math.ceil(max(batch) / multiple) * multiple
    return total


def test_packing_benchmark_counts_what_trl_computes(tmp_path):
    import numpy as np

    lengths_file = tmp_path / "lengths.txt"
    lengths_file.write_text("\n".join(map(str, FILE_LENGTHS)) + "\n")
    args = (
        *("--tokenizer", "tiny", "--synthetic-examples", "300", "--lengths-file", str(lengths_file)),
        *("--micro-batches", "1", "3", "--max-length", str(MAX_LENGTH), "--seed", str(SEED)),
    )
    section = run_bench_script("packing.py", tmp_path / "bench.md", *args)
    assert "## Padding efficiency: padded, padding-free and packed batches" in section
    assert "- command: `" in section and "scripts/bench/packing.py --tokenizer tiny" in section
    assert "tokenizer ossft's tiny BPE" in section

    # The examples are taken in the order of numpy's seeded permutation, the same for every mode.
    cut = [min(length, MAX_LENGTH) for length in FILE_LENGTHS]
    ordered = [cut[i] for i in np.random.default_rng(SEED).permutation(len(cut))]
    real = sum(cut)
    from_file = distribution(section, "Lengths from a file")
    for mb in (1, 3):
        assert from_file[("padded", mb)] == (round(real / padded_tokens(ordered, mb), 4), padded_tokens(ordered, mb))
        assert from_file[("padded, multiple of 256", mb)][1] == padded_tokens(ordered, mb, 256)
        assert from_file[("padding-free", mb)] == (1.0, real)
        assert from_file[("packed (bfd)", mb)] == (1.0, real)
    # Flattened, a micro-batch is padded once, as a whole: the sum of its 3 lengths, rounded up to 256.
    flat = sum(math.ceil(sum(ordered[s : s + 3]) / 256) * 256 for s in range(0, len(ordered), 3))
    assert from_file[("padding-free, multiple of 256", 3)][1] == flat

    for title in ("Multilingual-Thinking-shaped sample", "Long-tailed synthetic", "Lengths from a file"):
        rows = distribution(section, title)
        assert len(rows) == 7 * 2, title  # every mode at both micro-batch sizes
        for mb in (1, 3):
            assert rows[("packed (bfd)", mb)][0] >= rows[("padded", mb)][0], (title, mb)
            assert rows[("padding-free", mb)][0] == 1.0, (title, mb)
        assert all(0 < efficiency <= 1 for efficiency, _ in rows.values()), title


def test_packing_benchmark_repeats_its_numbers(tmp_path):
    args = ("--sample", "none", "--synthetic-examples", "400", "--micro-batches", "4", "--max-length", "1024")
    first, second = (run_bench_script("packing.py", tmp_path / f"{n}.md", *args) for n in (1, 2))

    def tables(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith(("|", "**", "- packed"))]

    assert tables(first) == tables(second) and len(tables(first)) > 10


def test_attention_benchmark_measures_both_kernels(tmp_path):
    args = ("--lengths", "256", "512", "--heads", "4", "--kv-heads", "2", "--head-dim", "32", "--repeat", "1")
    section = run_bench_script("attention_cpu.py", tmp_path / "bench.md", *args)
    assert "## Attention on CPU: eager against compiled flex, by length" in section
    assert "scripts/bench/attention_cpu.py --lengths 256 512 --heads 4" in section
    assert "returns no lse" in section
    number = r"[\d,]+(?:\.\d)?"
    for length in ("256", "512"):
        for mask in ("sliding 128", "full causal"):
            found = re.search(
                rf"^\| {length} \| {mask} \| ({number}) \| ({number}) \| ({number}) \| ({number}) \|",
                section,
                re.MULTILINE,
            )
            assert found, (length, mask, section)
            assert float(found[1].replace(",", "")) > 0 and float(found[3].replace(",", "")) > 0


def test_attention_benchmark_skips_eager_beyond_the_memory_cap():
    sys.path.insert(0, str(REPO / "scripts" / "bench"))
    import attention_cpu

    args = attention_cpu.parse_args(["--memory-cap", "12"])
    # gpt-oss's 64 heads in float32: 3 copies of [64, L, L + 1] scores, 12.0 GiB at 4k.
    assert attention_cpu.eager_skip_reason(args, 2048) is None
    assert attention_cpu.eager_skip_reason(args, 4096) == "skipped (needs 12 GiB)"
    assert attention_cpu.eager_skip_reason(args, 16384) == "skipped (needs 192 GiB)"
    assert attention_cpu.document_lengths(1000, [0.4, 0.3, 0.2, 0.1]) == [400, 300, 200, 100]
