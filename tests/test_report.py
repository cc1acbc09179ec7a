"""End of a run: summary.json with exact token counts, loss.png at each save and on demand, the model card."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ossft.recipe.load import load_recipe
from ossft.train import plots
from ossft.train.card import model_card
from ossft.train.meter import LossPlotCallback, warmup_steps_left_out
from ossft.train.run import run_training
from ossft.train.summary import summarize, summary_table

from .conftest import REPO

QUICKSTART = REPO / "recipes" / "quickstart.yaml"
DATA = REPO / "examples" / "data" / "chat_multilingual.jsonl"
SECRET = "hf_ossftTestSecretNeverWritten"


def overrides(model_dir: Path, out: Path | str, *extra: str) -> list[str]:
    return [f"model.base_model={model_dir}", f"data.datasets.0.path={DATA}", f"output.dir={out}", *extra]


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory):
    """6 LoRA steps, a checkpoint and an eval at steps 3 and 6, a token in the environment."""
    out = tmp_path_factory.mktemp("report") / "out"
    recipe = load_recipe(
        QUICKSTART,
        overrides(
            tiny_model_dir,
            out,
            "train.max_steps=6",
            "train.save_steps=3",
            "data.val_set_size=0.1",
            "train.logging_steps=1",
        ),
    )
    before = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = SECRET
    try:
        run = run_training(recipe, on_status=lambda line: None)
    finally:
        if before is None:
            del os.environ["HF_TOKEN"]
        else:
            os.environ["HF_TOKEN"] = before
    return run, out, json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def cli_full_run(tiny_model_dir, tmp_path_factory):
    """`ossft train` in-process: full fine-tuning, 2 whole epochs over 6 rows (16 examples). Batches of 3 and
    4 micro-batches a step: each epoch ends in a batch of 1 and a step of 2 micro-batches."""
    from ossft.cli import app

    where = tmp_path_factory.mktemp("report-cli")
    args = overrides(
        tiny_model_dir,
        "out-full",  # relative: short paths, so the printed commands fit the test terminal unfolded
        "lora=null",
        "data.datasets.0.sample=6",
        "train.num_train_epochs=2",
        "train.per_device_train_batch_size=3",
        "train.gradient_accumulation_steps=4",
        "train.logging_steps=1",
    )
    cwd = os.getcwd()
    os.chdir(where)
    try:
        result = CliRunner().invoke(app, ["train", str(QUICKSTART), *(a for o in args for a in ("--set", o))])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, (result.output, result.exception)
    out = where / "out-full"
    return result, out, json.loads((out / "summary.json").read_text())


# ---------------------------------------------------------------------------------------------
# summary.json


@pytest.mark.e2e
def test_summary_has_every_field(lora_run):
    _, out, summary = lora_run
    assert summary["method"] == "lora" and summary["steps"] == 6
    assert (summary["rows"], summary["rows_skipped"]) == (240, 0)
    assert summary["examples"] + summary["eval_examples"] == 608 and summary["eval_examples"] > 0
    assert 0 < summary["epochs"] < 1
    assert 0 < summary["tokens_trained"] < summary["tokens_seen"]
    assert summary["tokens_per_second"] > 0 and summary["tokens_per_second_steady"] > 0
    assert summary["steady_state_steps"] == [4, 6]  # steps 1-3 are warm-up
    assert summary["peak_cpu_rss_bytes"] > 50 * 2**20
    assert summary["peak_gpu_memory"] == [] or all(g["max_reserved_bytes"] > 0 for g in summary["peak_gpu_memory"])
    losses = [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(losses) == 6
    assert (summary["first_loss"], summary["last_loss"], summary["best_loss"]) == (losses[0], losses[-1], min(losses))
    assert isinstance(summary["eval_loss"], float) and summary["eval_loss"] > 0
    assert summary["wall_seconds"] > 0
    assert summary["outputs"]["model"] == str(out) and summary["outputs"]["plot"] == str(out / "loss.png")
    assert summary["outputs"]["checkpoints"] == [str(out / "checkpoint-3"), str(out / "checkpoint-6")]
    assert summary["next"] == [f"ossft generate {out}", f"ossft merge-lora {out} --out {out}-merged"]


@pytest.mark.e2e
def test_summary_is_the_same_when_made_again(lora_run):
    # `ossft train` summarizes once more after run_training wrote summary.json: both must agree.
    run, _, summary = lora_run
    assert json.loads(json.dumps(summarize(run))) == summary


@pytest.mark.e2e
def test_tokens_seen_agree_with_trl(lora_run):
    _, out, summary = lora_run
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    trl_count = [e["num_tokens"] for e in history if "num_tokens" in e and "loss" in e][-1]
    assert summary["tokens_seen"] == trl_count  # TRL sums attention_mask over every training batch


@pytest.mark.e2e
def test_token_counts_are_exact_over_whole_epochs(cli_full_run):
    _, _, summary = cli_full_run
    assert (summary["rows"], summary["examples"], summary["steps"], summary["epochs"]) == (6, 16, 4, 2.0)
    assert summary["tokens_seen"] == 2 * summary["dataset_tokens"]
    assert summary["tokens_trained"] == 2 * summary["trained_tokens_per_epoch"]


def test_warmup_steps_left_out_of_the_steady_speed():
    assert [warmup_steps_left_out(n) for n in (1, 2, 6, 10, 304)] == [0, 1, 3, 5, 5]


# ---------------------------------------------------------------------------------------------
# The terminal


@pytest.mark.e2e
def test_train_prints_the_table_and_the_next_commands(cli_full_run):
    result, _, summary = cli_full_run
    assert "run summary" in result.stdout and "tokens seen" in result.stdout and "loss drop" in result.stdout
    assert summary["next"] == ["ossft generate out-full", "ossft export out-full --mxfp4 --out out-full-mxfp4"]
    for command in summary["next"]:
        assert command in result.stdout


@pytest.mark.e2e
def test_table_shows_every_number(lora_run):
    from rich.console import Console

    _, out, summary = lora_run
    console = Console(file=io.StringIO(), width=200)
    console.print(summary_table(summary))
    text = console.file.getvalue()
    for label in ("tokens seen", "tokens trained", "tokens per second steady", "peak CPU RSS", "eval loss", "4-6"):
        assert label in text, label
    assert f"ossft merge-lora {out} --out {out}-merged" in text


# ---------------------------------------------------------------------------------------------
# loss.png


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.e2e
def test_loss_plot_is_drawn_at_each_save_and_at_the_end(lora_run):
    run, out, _ = lora_run
    plotter = next(c for c in run.trainer.callback_handler.callbacks if isinstance(c, LossPlotCallback))
    assert plotter.written_at == [3, 6]
    assert png_size(out / "loss.png") == (900, 500)
    assert (out / "loss.png").stat().st_size > 20_000


@pytest.mark.e2e
def test_plot_command_redraws_from_the_newest_state(lora_run, cli, tmp_path):
    _, out, _ = lora_run
    copy = tmp_path / "run"
    for step in (3, 6):
        (copy / f"checkpoint-{step}").mkdir(parents=True)
        shutil.copy(out / f"checkpoint-{step}" / "trainer_state.json", copy / f"checkpoint-{step}")
    result = cli("plot", copy)
    assert result.exit_code == 0, result.output
    assert "checkpoint-6" in result.stdout and png_size(copy / "loss.png") == (900, 500)
    shutil.copy(out / "trainer_state.json", copy)
    assert plots.newest_trainer_state(copy) == copy / "trainer_state.json"  # the final state comes first
    assert cli("plot", copy).exit_code == 0


def test_newest_checkpoint_is_the_highest_step(tmp_path):
    for step in (9, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text('{"log_history": []}')
    assert plots.newest_trainer_state(tmp_path) == tmp_path / "checkpoint-10" / "trainer_state.json"


def test_plot_without_a_trainer_state_is_a_user_error(cli, tmp_path):
    result = cli("plot", tmp_path)
    assert result.exit_code == 2 and "trainer_state.json" in result.stderr
    assert cli("plot", tmp_path / "missing").exit_code == 2


def test_plot_of_an_empty_history_still_draws(tmp_path):
    assert png_size(plots.write_loss_plot([], tmp_path)) == (900, 500)


# ---------------------------------------------------------------------------------------------
# README.md, the model card


def card_parts(path: Path) -> tuple[dict, str]:
    text = path.read_text()
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


@pytest.mark.e2e
def test_model_card_of_a_lora_adapter(lora_run, tiny_model_dir):
    _, out, summary = lora_run
    front, body = card_parts(out / "README.md")
    assert front == {"base_model": str(tiny_model_dir), "library_name": "peft", "tags": ["gpt-oss", "ossft"]}
    headings = [line for line in body.splitlines() if line.startswith("## ")]
    assert headings == ["## Method", "## Data", "## Recipe", "## Metrics", "## How to use"]
    assert "| rank `r` | 8 |" in body and "| `lora_alpha` | 16 |" in body
    assert "`q_proj`, `k_proj`, `v_proj`, `o_proj`" in body and "mlp.experts.gate_up_proj" in body
    assert "every layer" in body
    assert f"`{DATA}` | auto | 240 | {summary['examples']} | {summary['eval_examples']} |" in body
    assert "chat format: harmony" in body and "thinking: per_turn" in body
    block = body.split("```yaml\n", 1)[1].split("\n```", 1)[0]
    assert yaml.safe_load(block) == yaml.safe_load((out / "recipe.yaml").read_text())
    assert f"| eval loss | {summary['eval_loss']:.4g} |" in body
    assert f"| tokens seen | {summary['tokens_seen']:,} |" in body
    assert "![loss](loss.png)" in body
    for command in (f"ossft generate {out}", f"ossft merge-lora {out} --out {out}-merged", "--mxfp4", "vllm serve"):
        assert command in body, command


@pytest.mark.e2e
def test_model_card_of_a_full_fine_tune(cli_full_run):
    _, out, _ = cli_full_run
    front, body = card_parts(out / "README.md")
    assert front["library_name"] == "transformers" and front["tags"] == ["gpt-oss", "ossft"]
    assert "Full fine-tuning" in body and "ossft export out-full --mxfp4 --out out-full-mxfp4" in body
    assert "merge-lora" not in body


@pytest.mark.e2e
def test_no_secret_is_written(lora_run, tiny_model_dir):
    _, out, summary = lora_run
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    recipe = load_recipe(QUICKSTART, overrides(tiny_model_dir, out, f"train.hub_token={SECRET}"))
    card = model_card(recipe, summary)
    assert SECRET not in card and "hub_token: <redacted>" in card
