"""Experiment tracking through `train.report_to`: real runs on the tiny model, read back from the tracker's files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ossft.recipe.load import load_recipe
from ossft.train.run import run_training

from .conftest import REPO

pytestmark = pytest.mark.e2e  # real training runs


def tiny_run(tiny_model_dir, output_dir, report_to: str):
    """Three logged steps of the quickstart recipe on the tiny model."""
    recipe = load_recipe(
        REPO / "recipes" / "quickstart.yaml",
        [
            f"model.base_model={tiny_model_dir}",
            f"data.datasets.0.path={REPO / 'examples' / 'data' / 'chat_multilingual.jsonl'}",
            f"output.dir={output_dir}",
            "train.max_steps=3",
            "train.logging_steps=1",
            f"train.report_to={report_to}",
        ],
    )
    return run_training(recipe, on_status=lambda line: None)


def logged_losses(output_dir) -> dict[int, float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def test_tensorboard_gets_every_logged_loss(tiny_model_dir, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # Without TENSORBOARD_LOGGING_DIR, transformers writes the events under output_dir/runs/<time>_<host>/.
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    output_dir = tmp_path / "out"
    tiny_run(tiny_model_dir, output_dir, "tensorboard")

    event_files = list((output_dir / "runs").rglob("events.out.tfevents.*"))
    assert len(event_files) == 1, event_files
    events = EventAccumulator(str(event_files[0].parent))
    events.Reload()
    scalars = events.Scalars("train/loss")

    losses = logged_losses(output_dir)
    assert sorted(losses) == [1, 2, 3]
    assert [s.step for s in scalars] == [1, 2, 3]
    # TensorBoard stores float32; trainer_state.json keeps the same values as Python floats.
    assert [np.float32(s.value) for s in scalars] == [np.float32(losses[step]) for step in (1, 2, 3)]
    assert len(events.Scalars("train/learning_rate")) == 3


def test_wandb_offline_run_is_written(tiny_model_dir, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "ossft-test")
    output_dir = tmp_path / "out"
    try:
        tiny_run(tiny_model_dir, output_dir, "wandb")
    finally:
        wandb.finish()

    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list(tmp_path.rglob("*"))
    assert list(runs[0].glob("run-*.wandb")), list(runs[0].iterdir())
    assert sorted(logged_losses(output_dir)) == [1, 2, 3]
