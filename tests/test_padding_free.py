"""End to end: `ossft train` of the quickstart recipe with TRL's padding-free batches (one flattened row
per micro-batch, documents told apart by position_ids and cu_seq_lens) trains the same examples in the
same order as the padded run, so its logged losses must equal the padded run's."""

from __future__ import annotations

import json

import pytest

from .conftest import REPO
from .test_quickstart import ossft

pytestmark = pytest.mark.e2e

STEPS = 6


def train(tiny_model_dir, folder, *overrides):
    out = folder / "out"
    result = ossft(
        "train", REPO / "recipes" / "quickstart.yaml",
        "--set", f"model.base_model={tiny_model_dir}",
        "--set", f"data.datasets.0.path={REPO / 'examples/data/chat_multilingual.jsonl'}",
        "--set", f"output.dir={out}", "--set", f"train.max_steps={STEPS}", "--set", "train.logging_steps=1",
        "--set", "train.save_strategy=no",
        *[part for o in overrides for part in ("--set", o)],
        cwd=folder,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry], result


def test_padding_free_losses_equal_the_padded_run(tiny_model_dir, tmp_path):
    (tmp_path / "padded").mkdir()
    (tmp_path / "flat").mkdir()
    padded, _ = train(tiny_model_dir, tmp_path / "padded")
    flat, _ = train(tiny_model_dir, tmp_path / "flat", "train.padding_free=true")
    assert len(padded) == len(flat) == STEPS
    assert flat == pytest.approx(padded, rel=1e-5)
    assert padded[0] != padded[-1]  # the steps trained: a later step has another loss


def test_packing_trains(tiny_model_dir, tmp_path):
    losses, result = train(tiny_model_dir, tmp_path, "train.packing=true")
    assert len(losses) == STEPS and all(loss == loss for loss in losses)  # finite, no NaN
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["attention"]["attention"] == "eager"
