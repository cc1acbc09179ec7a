"""Damaged model and adapter folders: every command that reads one stops with exit code 2 and one short
message naming the damaged file, what is wrong with it and what to do; no traceback, nothing written.

The folders are real: the tiny model (one model.safetensors), a merge-lora output split into several
shards with an index, and the adapter of a 2-step `ossft train` of the quickstart recipe. Each test
damages a copy, the way a cut-short copy or download or a hand-edited index does. merge-shards' own
damage (.distcp files, .metadata) is tested in test_merge_shards.py; here it meets a damaged --base.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from .conftest import REPO

pytestmark = pytest.mark.e2e  # the folders are damaged copies of what `ossft train` wrote

QUICKSTART = REPO / "recipes" / "quickstart.yaml"
INDEX = "model.safetensors.index.json"
COPY_AGAIN = "Copy or download the model folder again, or save it again."


def run_cli(*args) -> object:
    from ossft.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def train(base: Path, out: Path):
    """`ossft train` of the quickstart recipe for 2 steps, from any folder the tests run in."""
    data = REPO / "examples" / "data" / "chat_multilingual.jsonl"
    sets = [f"model.base_model={base}", f"data.datasets=[{{path: '{data}'}}]", "train.max_steps=2", f"output.dir={out}"]
    return run_cli("train", QUICKSTART, *[arg for value in sets for arg in ("--set", value)])


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The LoRA adapter `ossft train` writes."""
    out = tmp_path_factory.mktemp("trained") / "run"
    result = train(tiny_model_dir, out)
    assert result.exit_code == 0, (result.output, result.exception)
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    return out


@pytest.fixture(scope="module")
def sharded_dir(adapter_dir, tiny_model_dir, tmp_path_factory) -> Path:
    """merge-lora's output, in shards of 300 kB, so that an index names several files."""
    from ossft.convert.merge_lora import merge_lora

    out = tmp_path_factory.mktemp("merged") / "merged"
    merge_lora(adapter_dir, out, base=tiny_model_dir, max_shard_size=300_000)
    assert len(json.loads((out / INDEX).read_text())["weight_map"]) > 0
    assert len(list(out.glob("model-*.safetensors"))) >= 3
    return out


@pytest.fixture(scope="module")
def fsdp_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A sharded (DCP) save of the tiny model's weights, as `ossft train` with FSDP leaves it; one process."""
    import warnings

    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file

    run = tmp_path_factory.mktemp("fsdp") / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process": it is
        dcp.save(
            {"model": load_file(tiny_model_dir / "model.safetensors")},
            checkpoint_id=str(run / "pytorch_model_fsdp_0"),
            no_dist=True,
        )
    return run


def flat(text: str) -> str:
    return " ".join(text.split())


def assert_refused(result, out: Path | None, *phrases: str) -> None:
    """Exit 2, the message as one paragraph holding every phrase, no traceback, no output folder."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)  # a UserError, not a crash (which CliRunner keeps)
    message = result.stderr[result.stderr.index("error: ") :].strip()
    assert "Traceback" not in result.output and "\n" not in message, message
    for phrase in phrases:
        assert phrase in flat(message), (phrase, message)
    assert len(message) < 1000, message
    if out is not None:
        assert not out.exists()
        assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no staging left


# ---------------------------------------------------------------------------------------------
# Damage


def shard_of(folder: Path) -> Path:
    """The weight file to damage: the single file, or the index's second shard."""
    if (folder / INDEX).is_file():
        return folder / sorted(set(json.loads((folder / INDEX).read_text())["weight_map"].values()))[1]
    return folder / "model.safetensors"


def cut(path: Path, where: str) -> None:
    data = path.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    size = {"header": header_end // 2, "data": (header_end + len(data)) // 2, "empty": 0}[where]
    path.write_bytes(data[:size])


def damage(folder: Path, kind: str) -> list[str]:
    """Damage the model folder in place; the phrases its error message must hold."""
    shard = shard_of(folder)
    index, config = folder / INDEX, folder / "config.json"
    if kind in ("header cut", "data cut", "empty"):
        cut(shard, kind.split()[0])
        what = {"header cut": "is truncated in its header", "data cut": "is truncated in its data"}
        return [f"{shard} {what.get(kind, 'is empty')}", COPY_AGAIN]
    if kind == "config not JSON":
        config.write_text(config.read_text()[:-20])
        return [f"{config} is not valid JSON (", "the file is damaged", COPY_AGAIN]
    doc = json.loads(index.read_text())
    weight_map = doc["weight_map"]
    if kind == "missing shard":
        shard.unlink()
        return [f"{folder} is incomplete: {INDEX} names {shard.name}, which is not there", "Copy or download"]
    if kind == "index not JSON":
        index.write_text(index.read_text()[:50])
        return [f"{index} is not valid JSON (", "the file is damaged", COPY_AGAIN]
    name = next(n for n, f in weight_map.items() if f == shard.name)
    if kind == "wrong file in index":
        other = next(f for f in weight_map.values() if f != shard.name)
        weight_map[name] = other
        index.write_text(json.dumps(doc))
        return [
            f"{index} does not match the weight files: it puts {name} in {other}, but it is in {shard.name}. "
            f"The index and the files come from different saves. {COPY_AGAIN}"
        ]
    assert kind == "tensor not in index"
    del weight_map[name]
    index.write_text(json.dumps(doc))
    return [f"{index} does not match the weight files: {name} in {shard.name} is not in its weight_map. ", COPY_AGAIN]


FILE_DAMAGE = ["header cut", "data cut", "empty", "config not JSON"]
INDEX_DAMAGE = ["missing shard", "index not JSON", "wrong file in index", "tensor not in index"]
MODEL_CASES = [("tiny", kind) for kind in FILE_DAMAGE] + [("sharded", kind) for kind in FILE_DAMAGE + INDEX_DAMAGE]


@pytest.fixture
def damaged_model(request, tiny_model_dir, sharded_dir, tmp_path):
    """(a damaged copy of the tiny or the sharded model, the phrases its error must hold)."""
    which, kind = request.param
    folder = shutil.copytree(tiny_model_dir if which == "tiny" else sharded_dir, tmp_path / f"{which}-model")
    return folder, damage(folder, kind)


def damaged_adapter(adapter_dir: Path, tmp_path: Path, kind: str) -> tuple[Path, list[str]]:
    folder = shutil.copytree(adapter_dir, tmp_path / "adapter")
    weights, config = folder / "adapter_model.safetensors", folder / "adapter_config.json"
    if kind == "config not JSON":
        config.write_text(config.read_text()[:-10])
        return folder, [f"{config} is not valid JSON (", "Copy the adapter folder again"]
    if kind == "weights missing":
        weights.unlink()
        return folder, [f"{folder} has adapter_config.json but no adapter_model.safetensors"]
    cut(weights, kind.split()[0])
    what = {"header cut": "is truncated in its header", "data cut": "is truncated in its data", "empty": "is empty"}
    return folder, [f"{weights} {what[kind]}", "Copy the adapter folder again"]


ADAPTER_DAMAGE = ["header cut", "data cut", "empty", "config not JSON", "weights missing"]


# ---------------------------------------------------------------------------------------------
# The commands


def test_the_undamaged_folders_work(adapter_dir, sharded_dir, tiny_model_dir, tmp_path):
    """So that every refusal below is the damage's doing."""
    assert run_cli("generate", sharded_dir, "--max-new-tokens", "2").exit_code == 0
    assert run_cli("generate", adapter_dir, "--max-new-tokens", "2").exit_code == 0
    copy = shutil.copytree(sharded_dir, tmp_path / "sharded")
    assert run_cli("export", copy, "--mxfp4", "--out", tmp_path / "mxfp4").exit_code == 0
    result = run_cli("merge-lora", adapter_dir, "--base", copy, "--out", tmp_path / "merged")
    assert result.exit_code == 0, (result.output, result.exception)


@pytest.mark.parametrize("damaged_model", MODEL_CASES, indirect=True, ids="-".join)
def test_generate_a_damaged_model(damaged_model):
    folder, phrases = damaged_model
    assert_refused(run_cli("generate", folder), None, *phrases)


@pytest.mark.parametrize("damaged_model", MODEL_CASES, indirect=True, ids="-".join)
def test_generate_an_adapter_on_a_damaged_base(damaged_model, adapter_dir):
    folder, phrases = damaged_model
    assert_refused(run_cli("generate", adapter_dir, "--base", folder), None, *phrases)


@pytest.mark.parametrize("damaged_model", MODEL_CASES, indirect=True, ids="-".join)
def test_merge_lora_on_a_damaged_base(damaged_model, adapter_dir, tmp_path):
    folder, phrases = damaged_model
    out = tmp_path / "parent" / "out"
    out.parent.mkdir()
    assert_refused(run_cli("merge-lora", adapter_dir, "--base", folder, "--out", out), out, *phrases)


@pytest.mark.parametrize("damaged_model", [c for c in MODEL_CASES if c[0] == "sharded"], indirect=True, ids="-".join)
def test_export_a_damaged_model(damaged_model, tmp_path):
    folder, phrases = damaged_model
    out = tmp_path / "parent" / "out"
    out.parent.mkdir()
    assert_refused(run_cli("export", folder, "--mxfp4", "--out", out), out, *phrases)


@pytest.mark.parametrize(
    "damaged_model",
    [("tiny", "data cut"), ("tiny", "config not JSON"), ("sharded", "wrong file in index")],
    indirect=True,
    ids="-".join,
)
def test_train_from_a_damaged_base(damaged_model, tmp_path):
    folder, phrases = damaged_model
    assert_refused(train(folder, tmp_path / "run"), None, *phrases)


@pytest.mark.parametrize("kind", ADAPTER_DAMAGE)
def test_generate_a_damaged_adapter(adapter_dir, tmp_path, kind):
    folder, phrases = damaged_adapter(adapter_dir, tmp_path, kind)
    assert_refused(run_cli("generate", folder), None, *phrases)


@pytest.mark.parametrize("kind", ADAPTER_DAMAGE)
def test_merge_lora_a_damaged_adapter(adapter_dir, tiny_model_dir, tmp_path, kind):
    folder, phrases = damaged_adapter(adapter_dir, tmp_path, kind)
    out = tmp_path / "parent" / "out"
    out.parent.mkdir()
    assert_refused(run_cli("merge-lora", folder, "--base", tiny_model_dir, "--out", out), out, *phrases)


def test_config_missing_is_named_by_every_command(adapter_dir, sharded_dir, tmp_path):
    folder = shutil.copytree(sharded_dir, tmp_path / "model")
    (folder / "config.json").unlink()
    out = tmp_path / "parent" / "out"
    out.parent.mkdir()
    assert_refused(run_cli("generate", folder), None, f"{folder} holds neither a model (config.json) nor a LoRA")
    assert_refused(
        run_cli("generate", adapter_dir, "--base", folder), None, f"the adapter's base model is not at {folder}"
    )
    assert_refused(
        run_cli("merge-lora", adapter_dir, "--base", folder, "--out", out),
        out,
        f"{folder} is not a model folder (no config.json)",
    )
    assert_refused(run_cli("export", folder, "--mxfp4", "--out", out), out, f"{folder} holds no config.json")
    assert_refused(
        train(folder, tmp_path / "run"),
        None,
        f"model.base_model: {folder} is a folder without config.json",
    )


@pytest.mark.parametrize("kind", ["config missing", "config not JSON", "config empty"])
def test_merge_shards_with_a_damaged_base_config(fsdp_run, tiny_model_dir, tmp_path, kind):
    base = shutil.copytree(tiny_model_dir, tmp_path / "base")
    config = base / "config.json"
    if kind == "config missing":
        config.unlink()
        phrase = f"--base {base}: no model folder with a config.json there"
    elif kind == "config empty":
        config.write_text("")
        phrase = f"{config} is empty: the file is damaged. Repair or replace it, or pass the base model the run"
    else:
        config.write_text(config.read_text()[:-20])
        phrase = f"{config} is not valid JSON ("
    out = tmp_path / "parent" / "out"
    out.parent.mkdir()
    assert_refused(run_cli("merge-shards", fsdp_run, "--base", base, "--out", out), out, phrase)
