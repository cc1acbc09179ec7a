"""Planted credentials never reach a written file or the terminal; the recipe copy says what ran."""

from __future__ import annotations

import os
import secrets as random_secrets
import subprocess
import sys

import pytest
import yaml

from ossft.secrets import REDACTED, redact, without_secrets
from tests.conftest import REPO

QUICKSTART = REPO / "recipes" / "quickstart.yaml"


def planted() -> dict[str, str]:
    return {
        "HF_TOKEN": "hf_" + random_secrets.token_hex(17),
        "WANDB_API_KEY": random_secrets.token_hex(20),  # 40 hex characters, no recognisable shape
        "MY_SERVICE_PASSWORD": "correct-horse-" + random_secrets.token_hex(4),
        "hub_token": "hf_" + random_secrets.token_hex(17),  # put in the recipe, not the environment
    }


@pytest.mark.e2e
def test_training_writes_and_prints_no_credential(tiny_model_dir, tmp_path):
    tokens = planted()
    out = tmp_path / "out"
    env = {**os.environ, **{k: v for k, v in tokens.items() if k.isupper()}, "HF_HUB_OFFLINE": "1"}
    sets = [
        f"model.base_model={tiny_model_dir}",
        f"output.dir={out}",
        "train.max_steps=2",
        "train.save_steps=1",
        f"train.hub_token={tokens['hub_token']}",
    ]
    command = [sys.executable, "-m", "ossft", "train", str(QUICKSTART), *(a for s in sets for a in ("--set", s))]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "training_args.bin" for p in files)  # the pickled TrainingArguments are checked too
    for name, value in tokens.items():
        secret = value.encode()
        assert secret not in done.stdout and secret not in done.stderr, f"{name} printed"
        leaked = [str(p.relative_to(out)) for p in files if secret in p.read_bytes()]
        assert not leaked, f"{name} written to {leaked}"
    copy = (out / "recipe.yaml").read_text()
    assert yaml.safe_load(copy)["train"]["hub_token"] == REDACTED
    for library in ("python", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed"):
        assert f"#   {library}: " in copy
    assert "#   ossft_git_commit: " in copy


def test_the_printed_launch_command_hides_a_token(cli, tmp_path):
    token = planted()["hub_token"]
    result = cli(
        "train", QUICKSTART, "--nproc", "2", "--dry-run",
        "--set", f"output.dir={tmp_path}", "--set", f"train.hub_token={token}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert token not in result.output and f"train.hub_token={REDACTED}" in result.stdout


def test_redaction_rules():
    env = {"WANDB_API_KEY": "0123456789abcdef", "DEBUG_LEVEL": "verbose-mode", "NCCL_TOKEN_X": "short"}
    assert redact("key=0123456789abcdef mode=verbose-mode", env) == f"key={REDACTED} mode=verbose-mode"
    assert redact("a hf_" + "x" * 34 + " b", {}) == f"a {REDACTED} b"
    data = {
        "train": {"hub_token": "anything", "eos_token": "<|return|>", "pad_token": None},
        "note": ["sk-" + "a" * 24],
    }
    assert without_secrets(data, {}) == {
        "train": {"hub_token": REDACTED, "eos_token": "<|return|>", "pad_token": None},
        "note": [REDACTED],
    }
