"""Shared fixtures: one tiny gpt-oss for the session, the repo root, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"

pytest_plugins = ["pytester"]  # tests/test_markers.py runs pytest on a small suite

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
# Tokenized-data caches of the tests (subprocesses included) stay out of the user's ~/.cache.
os.environ["OSSFT_CACHE"] = tempfile.mkdtemp(prefix="ossft-test-cache-")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from ossft.model.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-gpt-oss")


@pytest.fixture
def quickstart_recipe():
    from ossft.recipe.load import load_recipe

    return load_recipe(REPO / "recipes" / "quickstart.yaml")


@pytest.fixture
def cli():
    """Run `ossft ARGS...` in-process; returns click's Result (exit_code, stdout, stderr)."""
    from ossft.cli import app

    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return run


def run_bench_script(script: str, markdown: Path, *args: str, markdown_flag: str = "--markdown") -> str:
    """Run scripts/bench/SCRIPT with ARGS, appending its results to MARKDOWN; the file's text."""
    command = [sys.executable, f"scripts/bench/{script}", *args, markdown_flag, str(markdown)]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return markdown.read_text(encoding="utf-8")


# Each test has exactly one kind, a marker registered in pyproject.toml (tests/test_markers.py checks):
#   unit   fast: the default, a test that declares no kind is unit (`bash scripts/test.sh -m unit`)
#   e2e    trains (itself or through a fixture), runs several processes, smoke-runs a recipe, or takes more
#          than ~2 s on 2 cores: declared with @pytest.mark.e2e, or the module's pytestmark
#   bench  tests of scripts/bench/ (the module's pytestmark)
#   cloud  tests of the templates in scripts/skypilot, scripts/slurm, scripts/baseten (the module's pytestmark)
KINDS = ("unit", "e2e", "bench", "cloud")
KINDS_OF_TESTS = pytest.StashKey[dict[str, list[str]]]()  # node id -> its kind markers, for every test collected


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config, items):
    kinds_of_tests = config.stash.setdefault(KINDS_OF_TESTS, {})
    for item in items:
        kinds = [mark.name for mark in item.iter_markers() if mark.name in KINDS]
        if not kinds:
            item.add_marker(pytest.mark.unit)
            kinds = ["unit"]
        kinds_of_tests[item.nodeid] = kinds
