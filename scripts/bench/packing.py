"""Benchmark: how many of the tokens a model computes are real, for TRL's padded, padding-free and packed batches.

efficiency = real tokens / computed tokens over one epoch, where computed tokens are the positions the
model runs (the numel of the collated `input_ids`), pads included. Every batch is made by TRL's own
`DataCollatorForLanguageModeling` and every pack by TRL's own `trl.data_utils.pack_dataset`:

- padded: the default collator, each micro-batch padded to its longest example (and to a multiple of
  --pad-to-multiple-of, the rule ossft_flex uses for its compiled kernels);
- padding-free: `padding_free=True` without packing, a micro-batch flattened into one row (padded to the
  multiple where asked; those pads count as computed);
- packed (bfd): `pack_dataset(dataset, max_length)` with its default 'bfd' strategy; each packed row is a
  micro-batch member, and the micro-batch is flattened, because SFTTrainer turns padding_free on whenever
  it packs with bfd. "packed (bfd) rows, padded" is the collator without padding_free, for comparison.

Lengths come from two distributions: the Multilingual-Thinking-shaped sample in examples/data, prepared
by ossft (`prepare_data` on recipes/quickstart.yaml pointed at the sample) with the real o200k_harmony
tokenizer when ../shared/fixtures has it, else the tiny tokenizer; and a seeded long-tailed synthetic one.
`--lengths-file` adds a third (one length per line). Examples are taken in one seeded shuffled order for
every mode, and packed rows in a seeded shuffled order, as the trainer's sampler would. Counts only:
nothing is trained, and the same flags give the same numbers.

    .venv/bin/python scripts/bench/packing.py --markdown BENCHMARKS.md
    .venv/bin/python scripts/bench/packing.py --micro-batches 1 4 8 --max-length 2048 --lengths-file lengths.txt
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_prep import append_markdown  # noqa: E402
from two_ways import bench_facts  # noqa: E402

SAMPLE = Path("examples/data/multilingual_thinking_sample.jsonl")
PAD_TOKEN_ID = 0  # only the shapes matter: every real token is 1, every pad 0


@dataclass(frozen=True)
class Mode:
    name: str
    packed: bool
    padding_free: bool
    multiple: int | None
    trl_default: bool = True  # a batch TRL's SFTTrainer can make

    @classmethod
    def all(cls, multiple: int) -> list[Mode]:
        return [
            cls("padded", False, False, None),
            cls(f"padded, multiple of {multiple}", False, False, multiple),
            cls("padding-free", False, True, None),
            cls(f"padding-free, multiple of {multiple}", False, True, multiple),
            cls("packed (bfd)", True, True, None),
            cls(f"packed (bfd), multiple of {multiple}", True, True, multiple),
            cls("packed (bfd) rows, padded", True, False, None, trl_default=False),
        ]


@dataclass(frozen=True)
class Distribution:
    title: str
    description: str
    lengths: list[int]  # in the order the examples are taken


@dataclass(frozen=True)
class Epoch:
    real: int
    computed: int
    rows: int  # the rows the model runs: the batch dimension, summed over the micro-batches
    steps: int  # micro-batches
    longest: int  # the longest row, which sets a step's attention cost and memory

    @property
    def efficiency(self) -> float:
        return self.real / self.computed


# ---------------------------------------------------------------------------------------------
# Lengths


def sample_lengths(path: Path, max_length: int, tokenizer_choice: str, folder: Path) -> tuple[list[int], str]:
    """Token counts of the examples ossft prepares from the sample, and the tokenizer's name."""
    from ossft.data.prepare import prepare_data
    from ossft.model.load import load_tokenizer
    from ossft.recipe.load import load_recipe

    model_overrides = sample_tokenizer(tokenizer_choice, folder)
    overrides = [
        f"data.datasets.0.path={path.resolve()}",
        "data.datasets.0.format=multilingual_thinking",
        f"train.max_length={max_length}",
        *(f"model.{key}={value}" for key, value in model_overrides.items()),
    ]
    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml", overrides)
    prepared = prepare_data(recipe, load_tokenizer(recipe), use_cache=False)
    name = "o200k_harmony" if "tokenizer" in model_overrides else "ossft's tiny BPE (`ossft.model.tiny`)"
    return [len(ids) for ids in prepared.train["input_ids"]], name


def sample_tokenizer(choice: str, folder: Path) -> dict[str, str]:
    """Recipe model settings: the real tokenizer (fixtures) where it can be built and is wanted, else a tiny model."""
    from tests.o200k import cache_dir, gpt_oss_tokenizer_available, load_gpt_oss_tokenizer

    if choice == "o200k" and not gpt_oss_tokenizer_available():
        raise SystemExit("--tokenizer o200k: ../shared/fixtures/gpt-oss-tokenizer or tiktoken is missing")
    if choice != "tiny" and gpt_oss_tokenizer_available():
        load_gpt_oss_tokenizer()  # builds the saved tokenizer the recipe then names
        saved = cache_dir() / "hf"
        return {"base_model": str(saved), "tokenizer": str(saved)}  # the model itself is never loaded
    from ossft.model.tiny import write_tiny_model

    return {"base_model": str(write_tiny_model(folder / "tiny-gpt-oss"))}


def synthetic_lengths(count: int, median: int, sigma: float, max_length: int, seed: int) -> list[int]:
    import numpy as np

    drawn = np.random.default_rng(seed).lognormal(mean=math.log(median), sigma=sigma, size=count)
    return np.clip(np.rint(drawn), 16, max_length).astype(int).tolist()


def shuffled(lengths: list[int], seed: int) -> list[int]:
    import numpy as np

    return [lengths[i] for i in np.random.default_rng(seed).permutation(len(lengths))]


def describe_lengths(lengths: list[int]) -> str:
    import numpy as np

    values = np.array(lengths)
    return (
        f"{len(values):,} examples, {int(values.sum()):,} tokens; length min {values.min()}, median "
        f"{np.median(values):.0f}, mean {values.mean():.0f}, p90 {np.percentile(values, 90):.0f}, max {values.max()}"
    )


# ---------------------------------------------------------------------------------------------
# Batches


def packed_rows(lengths: list[int], max_length: int, seed: int) -> list[list[int]]:
    """The documents' lengths in each row TRL's bfd packing makes, the rows in a seeded shuffled order."""
    import numpy as np
    import pyarrow as pa
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = pa.LargeListArray.from_arrays(offsets, pa.array(np.ones(int(offsets[-1]), dtype=np.int64)))
    packed = pack_dataset(Dataset(pa.table({"input_ids": tokens})), max_length)  # strategy "bfd", as SFTTrainer
    rows = packed.with_format(None)["seq_lengths"]
    return shuffled(rows, seed)


def run_epoch(members: list[list[int]], mode: Mode, micro_batch: int) -> Epoch:
    """Collate every micro-batch with TRL's collator; members are rows, each the lengths of its documents."""
    import numpy as np
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(
        pad_token_id=PAD_TOKEN_ID, padding_free=mode.padding_free, pad_to_multiple_of=mode.multiple
    )
    ones = np.ones(max(sum(m) for m in members), dtype=np.int64)
    real = computed = rows = steps = longest = 0
    for start in range(0, len(members), micro_batch):
        batch = members[start : start + micro_batch]
        examples = [
            {"input_ids": ones[: sum(docs)], **({"seq_lengths": docs} if mode.packed else {})} for docs in batch
        ]
        input_ids = collator(examples)["input_ids"]
        real += int((input_ids != PAD_TOKEN_ID).sum())
        computed += input_ids.numel()
        rows += input_ids.shape[0]
        steps += 1
        longest = max(longest, input_ids.shape[1])
    expected = sum(sum(m) for m in members)
    if real != expected:
        raise RuntimeError(f"{mode.name}: the batches hold {real} real tokens, the examples {expected}")
    return Epoch(real, computed, rows, steps, longest)


def measure(lengths: list[int], args) -> dict[tuple[str, int], Epoch]:
    examples = [[length] for length in lengths]
    packs = packed_rows(lengths, args.max_length, args.seed)
    return {
        (mode.name, micro_batch): run_epoch(packs if mode.packed else examples, mode, micro_batch)
        for mode in Mode.all(args.pad_to_multiple_of)
        for micro_batch in args.micro_batches
    }


# ---------------------------------------------------------------------------------------------
# Report


def table(distribution: Distribution, epochs: dict, args) -> list[str]:
    modes = Mode.all(args.pad_to_multiple_of)
    lines = [
        f"**{distribution.title}**: {distribution.description}; {describe_lengths(distribution.lengths)}",
        "",
        "| mode | micro-batch | efficiency | computed tokens | rows per epoch | steps per epoch | longest row |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode in modes:
        for micro_batch in args.micro_batches:
            e = epochs[(mode.name, micro_batch)]
            name = mode.name if mode.trl_default else f"{mode.name} (not SFTTrainer's)"
            lines.append(
                f"| {name} | {micro_batch} | {e.efficiency:.4f} | {e.computed:,} | {e.rows:,} | {e.steps:,} | {e.longest:,} |"
            )

    def ratios(packed: str, padded: str) -> str:
        return ", ".join(
            f"{mb}: **{epochs[(packed, mb)].efficiency / epochs[(padded, mb)].efficiency:.2f}x**"
            for mb in args.micro_batches
        )

    multiple = args.pad_to_multiple_of
    lines += [
        "",
        f"- packed (bfd) / padded efficiency, by micro-batch: {ratios('packed (bfd)', 'padded')}; both padded to "
        f"multiples of {multiple}: "
        f"{ratios(f'packed (bfd), multiple of {multiple}', f'padded, multiple of {multiple}')}",
        "",
    ]
    return lines


def section(distributions: list[Distribution], results: list[dict], args, facts: dict) -> str:
    lines = [
        f"## Padding efficiency: padded, padding-free and packed batches ({facts['date']})",
        "",
        f"- machine: {facts['cpu']}, {facts['cores']} cores usable (counts only: nothing runs a model)",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()),
        f"- command: `{facts['command']}`",
        "- efficiency = real tokens / computed tokens over one epoch; computed = the numel of the `input_ids` "
        "TRL's `DataCollatorForLanguageModeling` makes (pads included); packs by `trl.data_utils.pack_dataset` "
        f"(strategy 'bfd', seq_length = max_length {args.max_length}, its default map batches of 1,000 "
        "examples); SFTTrainer turns padding_free on whenever it packs with bfd, so 'packed (bfd)' is flattened",
        f"- order: examples shuffled once with seed {args.seed}, the same for every mode; packed rows shuffled "
        "with the same seed (the trainer's sampler shuffles them too); the last micro-batch may be short",
        "",
    ]
    for distribution, epochs in zip(distributions, results, strict=True):
        lines += table(distribution, epochs, args)
    return "\n".join(lines)


def load_distributions(args, folder: Path) -> list[Distribution]:
    distributions = []
    if args.sample is not None:
        lengths, tokenizer = sample_lengths(args.sample, args.max_length, args.tokenizer, folder)
        distributions.append(
            Distribution(
                "Multilingual-Thinking-shaped sample",
                f"`{args.sample}` prepared by ossft (quickstart recipe, `format: multilingual_thinking`, "
                f"max_length {args.max_length}), tokenizer {tokenizer}",
                shuffled(lengths, args.seed),
            )
        )
    if args.synthetic_examples:
        lengths = synthetic_lengths(
            args.synthetic_examples, args.synthetic_median, args.synthetic_sigma, args.max_length, args.seed
        )
        distributions.append(
            Distribution(
                "Long-tailed synthetic",
                f"`numpy.random.default_rng({args.seed}).lognormal(mean=ln {args.synthetic_median}, "
                f"sigma={args.synthetic_sigma}, size={args.synthetic_examples})`, rounded and clipped to "
                f"[16, {args.max_length}]",
                shuffled(lengths, args.seed),
            )
        )
    if args.lengths_file is not None:
        given = [int(line) for line in args.lengths_file.read_text(encoding="utf-8").split()]
        clipped = [min(length, args.max_length) for length in given]  # truncation, as TRL's max_length
        distributions.append(
            Distribution(
                "Lengths from a file", f"`{args.lengths_file}`, cut to max_length", shuffled(clipped, args.seed)
            )
        )
    if not distributions:
        raise SystemExit("nothing to measure: give --sample, --synthetic-examples above 0 or --lengths-file")
    return distributions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--micro-batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--pad-to-multiple-of", type=int, default=256, help="the second variant of each mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sample", type=lambda text: None if text == "none" else Path(text), default=SAMPLE,
        help=f"jsonl in the Multilingual-Thinking format (default {SAMPLE}); 'none' leaves it out",
    )  # fmt: skip
    parser.add_argument("--tokenizer", choices=("auto", "o200k", "tiny"), default="auto", help="for --sample")
    parser.add_argument("--synthetic-examples", type=int, default=10_000, help="0 leaves the distribution out")
    parser.add_argument("--synthetic-median", type=int, default=400)
    parser.add_argument("--synthetic-sigma", type=float, default=1.0)
    parser.add_argument("--lengths-file", type=Path, help="one example length per line")
    parser.add_argument("--markdown", type=Path, help="append the results to this file (BENCHMARKS.md)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import datasets

    datasets.disable_progress_bars()
    facts = bench_facts(__file__, ("torch", "transformers", "trl", "datasets"))
    with tempfile.TemporaryDirectory(prefix="ossft-bench-packing-") as folder:
        distributions = load_distributions(args, Path(folder))
    results = [measure(distribution.lengths, args) for distribution in distributions]
    text = section(distributions, results, args, facts)
    print(text)
    if args.markdown:
        append_markdown(args.markdown, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
