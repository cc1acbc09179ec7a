"""A GPU-only option on a machine without a GPU: one message before anything loads, exit code 2."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")


def test_gpu_only_options_are_refused_on_cpu(cli, tmp_path):
    result = cli(
        "train", REPO / "recipes" / "quickstart.yaml",
        "--set", f"output.dir={tmp_path / 'out'}",
        "--set", "model.attn_implementation=flex_attention",
        "--set", "train.optim=adamw_8bit",
        "--set", "train.fp16=true",
    )  # fmt: skip
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert message.startswith("error: no GPU here, and the recipe asks for what only a GPU does: ")
    assert "model.attn_implementation: flex_attention needs a GPU (use eager on CPU)" in message
    assert "train.optim: adamw_8bit needs CUDA (use adamw_torch on CPU)" in message
    assert "train.fp16: fp16 mixed precision needs a GPU" in message
    assert "ossft train RECIPE --smoke" in message and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
