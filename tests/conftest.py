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
