"""`ossft validate` finds the data as training will: a missing local path is an error (exit 2, with its
line), a Hub dataset missing from the local cache only a warning."""

from __future__ import annotations

import json
import shutil
import socket

import pytest

from ossft.data.sources import SourceSpec, load_rows
from ossft.errors import UserError

HUB_ID = "ossft-tests/no-such-dataset"


def write_recipe(folder, *paths: str):
    """A recipe whose data.datasets has one entry per path; the `- path:` lines are 5, 6, ..."""
    recipe = folder / "recipe.yaml"
    entries = "".join(f"    - path: {path}\n" for path in paths)
    recipe.write_text(f"model:\n  base_model: m\ndata:\n  datasets:\n{entries}", encoding="utf-8")
    return recipe


def training_error(path: str) -> str:
    with pytest.raises(UserError) as info:
        load_rows(SourceSpec(path), seed=0)
    return str(info.value)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty, private Hugging Face cache, offline, with the network refused; its datasets folder."""
    import datasets.config
    import huggingface_hub.constants

    # Both libraries read these at import time, so the environment alone may come too late.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))

    def refuse(sock, address):
        raise OSError("tests never touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return cache


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_missing_local_file_exits_2_with_line_and_trainings_message(cli, workdir):
    (workdir / "there.jsonl").write_text('{"prompt": "a", "completion": "b"}\n', encoding="utf-8")
    recipe = write_recipe(workdir, "there.jsonl", "data/missing.jsonl")
    result = cli("validate", recipe)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"error: {recipe} line 6: {training_error('data/missing.jsonl')}\n"
    assert "dataset not found: data/missing.jsonl." in result.stderr and str(workdir) in result.stderr


def test_every_missing_path_is_reported(cli, workdir):
    recipe = write_recipe(workdir, "a.jsonl", "b.parquet")
    result = cli("validate", recipe)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"error: {recipe} line 5: dataset not found: a.jsonl.")
    assert lines[1].startswith(f"{recipe} line 6: dataset not found: b.parquet.")


def test_glob_matching_nothing_is_the_same_error_as_in_training(cli, workdir):
    recipe = write_recipe(workdir, "'data/*.jsonl'")
    result = cli("validate", recipe)
    assert result.exit_code == 2
    assert result.stderr == f"error: {recipe} line 5: {training_error('data/*.jsonl')}\n"
    assert "data/*.jsonl: it matches nothing." in result.stderr


def test_a_path_given_with_set_is_named_by_its_set(cli, workdir):
    (workdir / "there.jsonl").write_text("{}\n", encoding="utf-8")
    recipe = write_recipe(workdir, "there.jsonl")
    result = cli("validate", recipe, "--set", "data.datasets.0.path=elsewhere/rows.json")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: --set data.datasets.0.path=elsewhere/rows.json: dataset not found: elsewhere/rows.json."
    )


def test_relative_paths_resolve_from_the_current_folder_not_the_recipes(cli, workdir):
    recipes = workdir / "recipes"
    recipes.mkdir()
    (recipes / "rows.jsonl").write_text("{}\n", encoding="utf-8")
    recipe = write_recipe(recipes, "rows.jsonl")
    assert cli("validate", recipe).exit_code == 2  # as training would: rows.jsonl is not in workdir
    (workdir / "rows.jsonl").write_text("{}\n", encoding="utf-8")
    assert cli("validate", recipe).exit_code == 0


def test_existing_local_file_and_folder_pass_without_warning(cli, workdir, offline_hub):
    (workdir / "rows.jsonl").write_text("{}\n", encoding="utf-8")
    (workdir / "parts").mkdir()
    (workdir / "parts" / "a.csv").write_text("prompt,completion\na,b\n", encoding="utf-8")
    recipe = write_recipe(workdir, "rows.jsonl", "parts", "'parts/*.csv'")
    result = cli("validate", recipe)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == f"ok: {recipe} is a valid recipe.\n"
    assert "rows.jsonl" in result.stdout  # the resolved recipe is still printed


def test_hub_dataset_missing_from_the_cache_is_a_warning(cli, workdir, offline_hub):
    recipe = write_recipe(workdir, HUB_ID)
    result = cli("validate", recipe)
    assert result.exit_code == 0, result.stderr
    assert f"path: {HUB_ID}" in result.stdout
    warning, ok = result.stderr.splitlines()
    assert warning.startswith(
        f"warning: {recipe} line 5: {HUB_ID} is not in the local Hugging Face cache ({offline_hub}); "
        "HF_HUB_OFFLINE is set, so training here would stop"
    )
    assert ok == f"ok: {recipe} is a valid recipe."
    # What the warning announces: training, here, refuses it.
    assert training_error(HUB_ID).startswith(f"dataset not found: {HUB_ID} is neither a local path")


def test_hub_dataset_in_the_cache_passes_without_warning(cli, workdir, offline_hub, tmp_path):
    from datasets.packaged_modules.json.json import Json

    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    # The layout load_dataset leaves behind for a Hub id: <owner>___<name>/<config>/<version>/<hash>.
    builder = Json(dataset_name="cached", data_files={"train": str(source)}, cache_dir=str(tmp_path / "build"))
    builder.download_and_prepare()
    shutil.copytree(builder.cache_dir, offline_hub / "ossft-tests___cached" / "default" / "0.0.0" / "0123abcd")

    recipe = write_recipe(workdir, "ossft-tests/cached")
    result = cli("validate", recipe)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == f"ok: {recipe} is a valid recipe.\n"
    # The cache is a real one: training reads the rows from it, offline.
    assert load_rows(SourceSpec("ossft-tests/cached"), seed=0).rows == rows
