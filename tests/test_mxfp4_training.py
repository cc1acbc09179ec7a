"""End to end: the quickstart recipe on `ossft tiny-model --mxfp4`, with the experts kept in MXFP4 and
with them dequantized, through the real `ossft` commands: the same logged losses; a resumed run that
continues as the uninterrupted one did; and merge-lora and export --mxfp4 from its output."""

from __future__ import annotations

import json
import shutil

import pytest

from .conftest import REPO
from .test_quickstart import ossft

pytestmark = pytest.mark.e2e

STEPS = 6


@pytest.fixture(scope="module")
def mxfp4_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mxfp4")
    result = ossft("tiny-model", folder / "tiny-mxfp4", "--mxfp4", cwd=folder)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder / "tiny-mxfp4"


def train(model, out, mxfp4_experts: bool):
    result = ossft(
        "train", REPO / "recipes" / "quickstart.yaml",
        "--set", f"model.base_model={model}", "--set", f"model.mxfp4_experts={str(mxfp4_experts).lower()}",
        "--set", f"data.datasets.0.path={REPO / 'examples/data/chat_multilingual.jsonl'}",
        "--set", f"output.dir={out}", "--set", f"train.max_steps={STEPS}", "--set", "train.logging_steps=1",
        "--set", "train.save_steps=3",
        cwd=out.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return logged_losses(out)


def logged_losses(out) -> dict[int, float]:
    state = json.loads((out / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def test_mxfp4_experts_train_as_the_dequantized_ones(mxfp4_model, tmp_path):
    kept = train(mxfp4_model, tmp_path / "kept", True)
    dense = train(mxfp4_model, tmp_path / "dense", False)
    assert list(kept) == list(range(1, STEPS + 1))
    assert list(kept.values()) == pytest.approx(list(dense.values()), rel=1e-5)

    # Resume: only checkpoint-3 left, the run trains steps 4-6 again and logs what it logged the first time.
    resumed = tmp_path / "kept"
    for path in resumed.iterdir():
        if path.name != "checkpoint-3":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    again = train(mxfp4_model, resumed, True)
    assert [again[s] for s in (4, 5, 6)] == [kept[s] for s in (4, 5, 6)]

    merged = tmp_path / "merged"
    result = ossft("merge-lora", resumed, "--out", merged, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    exported = tmp_path / "exported"
    result = ossft("export", merged, "--mxfp4", "--out", exported, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((exported / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "mxfp4"


@pytest.fixture(scope="module")
def dense_ddp(mxfp4_model, tmp_path_factory):
    from tests.test_fsdp2 import train as train_ranks
    from tests.test_fsdp2 import train_command

    out = tmp_path_factory.mktemp("dense") / "dense-ddp"
    train_ranks(train_command(mxfp4_model, out, "ddp", "model.mxfp4_experts=false"))
    return out


@pytest.mark.parametrize("config", ["ddp", "fsdp2", "zero3"])
def test_mxfp4_experts_on_two_processes_train_as_dense_ddp(mxfp4_model, dense_ddp, tmp_path, config):
    """The uint8 blocks and scales are buffers, not parameters: FSDP2 and ZeRO-3 shard the rest and leave
    them whole on each rank, as DDP does."""
    from tests.test_fsdp2 import assert_losses_close, train_command
    from tests.test_fsdp2 import train as train_ranks

    if config == "zero3":
        pytest.importorskip("deepspeed")
    kept = tmp_path / f"kept-{config}"
    train_ranks(train_command(mxfp4_model, kept, config, "model.mxfp4_experts=true"))
    assert_losses_close(kept, dense_ddp)
    distributed = json.loads((kept / "summary.json").read_text())["distributed"]
    expected = {"ddp": "DDP over 2", "fsdp2": "FSDP2 over 2", "zero3": "DEEPSPEED over 2"}[config]
    assert distributed.startswith(expected), distributed
