"""The disk check before training: the estimate covers what a run really writes, and a disk too small
for it stops the run before the first step, with the numbers."""

from __future__ import annotations

import shutil

import pytest

from ossft.recipe.load import load_recipe
from ossft.train import disk
from tests.conftest import REPO

pytestmark = pytest.mark.e2e  # `ossft train` runs

QUICKSTART = REPO / "recipes" / "quickstart.yaml"


def overrides(tiny_model_dir, out) -> list[str]:
    return [
        f"model.base_model={tiny_model_dir}",
        f"output.dir={out}",
        "train.max_steps=4",
        "train.save_steps=2",
        "train.save_total_limit=null",
    ]


def folder_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_estimate_covers_what_the_run_writes(tiny_model_dir, tmp_path, cli):
    from ossft.train.run import planned_steps, prepare_trainer

    out = tmp_path / "out"
    trainer, *_ = prepare_trainer(load_recipe(QUICKSTART, overrides(tiny_model_dir, out)), on_status=lambda _: None)
    plan = disk.disk_needs(trainer, planned_steps(trainer))
    assert (planned_steps(trainer), plan.checkpoints_kept) == (4, 2)
    # LoRA: 27,648 trainable fp32 parameters -> 110,592 bytes of weights, twice that of AdamW moments.
    assert plan.final_bytes == 110_592 + disk.SMALL_FILES
    assert plan.checkpoint_bytes == 3 * 110_592 + disk.SMALL_FILES
    del trainer

    args = ["train", QUICKSTART, *(a for s in overrides(tiny_model_dir, out) for a in ("--set", s))]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert len(checkpoints) == plan.checkpoints_kept
    for checkpoint in checkpoints:
        written = folder_bytes(checkpoint)
        assert plan.checkpoint_bytes - disk.SMALL_FILES < written < plan.checkpoint_bytes
    assert folder_bytes(out) < plan.total


def test_too_small_a_disk_stops_the_run_before_it_starts(tiny_model_dir, tmp_path, cli, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 2**20, 2**20))
    args = ["train", QUICKSTART, *(a for s in overrides(tiny_model_dir, out) for a in ("--set", s))]
    result = cli(*args)
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert f"not enough disk space for {out}: this run writes up to 0.05 GiB (2 checkpoint(s) of 0.02 GiB" in message
    assert "and 0.00 GiB are free" in message and "--skip-disk-check" in message
    assert not out.exists() or not any(out.iterdir())  # the Trainer makes the folder; nothing is written
    result = cli(*args, "--skip-disk-check")
    assert result.exit_code == 0, result.output
    assert (out / "adapter_model.safetensors").is_file()
