"""Multi-process training through the real launcher: `ossft train` re-runs itself under accelerate
launch (torchrun underneath), the processes train with DDP over gloo on CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

STEPS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ossft(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ossft", *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def finish(process: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def recipe_args(tiny_model_dir: Path, out: Path, *extra: str) -> list[str]:
    sets = [
        f"model.base_model={tiny_model_dir}",
        f"output.dir={out}",
        f"train.max_steps={STEPS}",
        "train.save_steps=2",
        "train.logging_steps=1",
        *extra,
    ]
    return ["train", str(REPO / "recipes" / "quickstart.yaml")] + [a for s in sets for a in ("--set", s)]


def adapter_digest(tiny_model_dir: Path, adapter: Path) -> str:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ossft.checkpoints.verify import trainable_digest

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32")
    model = PeftModel.from_pretrained(base, adapter, is_trainable=True)
    return trainable_digest(model)


@pytest.fixture(scope="module")
def two_process_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "out"
    code, log = finish(ossft(*recipe_args(tiny_model_dir, out), "--nproc", "2", "--master-port", free_port()))
    assert code == 0, log[-3000:]
    return out, log


@pytest.mark.e2e
def test_two_processes_train_one_model(two_process_run, tiny_model_dir):
    out, log = two_process_run
    assert "launching 2 processes" in log and "uses plain data parallel" not in log  # quickstart names no config
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["processes"], summary["steps"]) == (2, STEPS)
    # Both ranks' trained weights are bitwise equal, and equal to what was saved.
    assert summary["replicas_identical"] is True and len(summary["replica_digests"]) == 2
    assert summary["replica_digests"][0] == adapter_digest(tiny_model_dir, out)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert log.count("run summary") == 1  # rank 0 alone prints and writes the shared outputs


@pytest.mark.e2e
def test_summary_counts_the_tokens_of_both_ranks(two_process_run, tiny_model_dir, tmp_path, cli):
    # Two ranks of 8 sequences per step see, together, the same 16 sequences per step as one
    # process with batches of 16 (accelerate deals the shuffled batches out round-robin).
    out, _ = two_process_run
    alone = tmp_path / "alone"
    result = cli(*recipe_args(tiny_model_dir, alone, "train.per_device_train_batch_size=16"))
    assert result.exit_code == 0, result.output
    two, one = (json.loads((d / "summary.json").read_text()) for d in (out, alone))
    assert two["tokens_seen"] == one["tokens_seen"] > 0
    assert two["tokens_trained"] == one["tokens_trained"] > 0
    assert one["processes"] == 1 and one["replicas_identical"] is None


@pytest.mark.e2e
def test_two_nodes_on_loopback_finish_together(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    port = str(free_port())
    nodes = [
        ossft(*recipe_args(tiny_model_dir, out), "--nnodes", 2, "--node-rank", rank, "--nproc", 1,
              "--master-addr", "127.0.0.1", "--master-port", port)
        for rank in (0, 1)
    ]  # fmt: skip
    results = [finish(node) for node in nodes]
    for code, log in results:
        assert code == 0, log[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["processes"], summary["steps"], summary["replicas_identical"]) == (2, STEPS, True)
    assert "--machine_rank 1" in results[1][1] and "--machine_rank 0" in results[0][1]


@pytest.mark.e2e
def test_a_rank_that_stops_on_bad_data_makes_the_launch_exit_2(tiny_model_dir, tmp_path):
    rows = tmp_path / "bad.jsonl"
    rows.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": 3}\n')
    code, log = finish(
        ossft(
            *recipe_args(tiny_model_dir, tmp_path / "out", f"data.datasets.0.path={rows}"),
            "--nproc", 2, "--master-port", free_port(),
        )
    )  # fmt: skip
    assert code == 2, log[-3000:]
    assert "error: rank 0 of 2:" in log and "bad.jsonl" in log
    assert "training stopped: the error of each failing rank is printed above" in log
    assert not (tmp_path / "out" / "summary.json").exists()


def test_dry_run_prints_the_command_and_starts_nothing(cli, tmp_path):
    result = cli(
        "train", REPO / "recipes" / "quickstart.yaml", "--nproc", "2", "--nnodes", "2", "--node-rank", "1",
        "--master-addr", "10.0.0.1", "--dry-run", "--set", f"output.dir={tmp_path / 'out'}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "processes per node: 2  (flag)" in result.stdout
    assert "master address: 10.0.0.1  (flag)" in result.stdout
    assert "accelerate.commands.launch" in result.stdout
    assert "--num_processes 4 --num_machines 2 --machine_rank 1 --main_process_ip 10.0.0.1" in result.stdout
    assert f"-m ossft train {REPO / 'recipes' / 'quickstart.yaml'} --set output.dir=" in result.stdout
    assert not (tmp_path / "out").exists()
