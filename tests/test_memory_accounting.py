"""`ossft plan`'s static parts against the bytes each rank really holds after an optimizer step.

Two gloo processes on CPU run the tiny gpt-oss through the same launch and trainer as `ossft train`
(tests/memory_probe.py measures; how is written there), with AdamW. DDP and FSDP2 run as a GPU run does:
a bf16 model and bf16 mixed precision (so accelerate's FSDP2 upcasts what trains to fp32, and PEFT keeps
the adapter in fp32). ZeRO-3 runs in fp32: on CPU the Trainer allows bf16 only with use_cpu, which
switches DeepSpeed off; its bf16 rule (bf16 partitions, an fp32 master copy) is read from DeepSpeed's
source (memory.optimizer_state_bytes). Offload changes where the bytes are, not how many: on a CPU machine
the measurement cannot tell GPU from CPU, so the plan's per-process total (GPU plus CPU RAM) is compared.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ossft.launch import memory, plan
from ossft.launch.command import plan_launch
from ossft.launch.topology import LaunchFlags
from ossft.recipe.load import dump_recipe, load_recipe
from tests.conftest import REPO
from tests.test_distributed_train import free_port

pytestmark = pytest.mark.e2e

TOLERANCE = 0.02
LAYOUTS = {"ddp": "DDP", "fsdp2": "FSDP2", "fsdp2-offload": "FSDP2", "zero3": "DEEPSPEED"}
METHODS = {"full": ["lora=null"], "lora": []}  # the quickstart's LoRA: attention and every layer's experts


def probe_recipe(tiny_model_dir: Path, config: str, method: str, folder: Path) -> Path:
    precision = (
        ["model.dtype=float32", "train.bf16=false"]
        if config.startswith("zero3")
        else ["model.dtype=bfloat16", "train.bf16=true", "train.use_cpu=true"]
    )
    recipe = load_recipe(
        REPO / "recipes" / "quickstart.yaml",
        [
            f"model.base_model={tiny_model_dir}",
            *precision,
            "train.optim=adamw_torch",
            f"launch.accelerate_config={config}",
            "train.max_steps=1",
            "train.save_strategy=no",
            "train.per_device_train_batch_size=2",
            f"output.dir={folder / 'out'}",
            *METHODS[method],
        ],
    )
    path = folder / "recipe.yaml"
    path.write_text(dump_recipe(recipe))
    return path


def measure(recipe_path: Path, folder: Path) -> list[dict]:
    """Each rank's report, from the launch `ossft train` would run, with the probe in place of ossft."""
    recipe = load_recipe(recipe_path)
    launch = plan_launch(recipe, LaunchFlags(nproc=2, master_port=free_port()), ["train", str(recipe_path)], {}, 0)
    command = launch.command[: launch.command.index("ossft") - 1] + ["-m", "tests.memory_probe", str(recipe_path), str(folder)]
    env = {**os.environ, **launch.env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return [json.loads((folder / f"rank-{rank}.json").read_text()) for rank in range(2)]


def planned(recipe_path: Path) -> dict[str, float]:
    recipe = load_recipe(recipe_path)
    return memory.estimate(recipe, plan.layout_for(recipe, gpus=2, nodes=1)).held_parts()


def mismatches(report: dict, plan_parts: dict[str, float]) -> dict[str, tuple[int, float]]:
    return {
        part: (report[part], expected)
        for part, expected in plan_parts.items()
        if abs(report[part] / expected - 1) > TOLERANCE
    }


@pytest.fixture(scope="module")
def measured(tiny_model_dir, tmp_path_factory):
    cache: dict[tuple[str, str], tuple[Path, list[dict]]] = {}

    def get(config: str, method: str):
        if (config, method) not in cache:
            if config == "zero3":
                pytest.importorskip("deepspeed")
            folder = tmp_path_factory.mktemp(f"{config}-{method}")
            recipe = probe_recipe(tiny_model_dir, config, method, folder)
            cache[config, method] = recipe, measure(recipe, folder)
        return cache[config, method]

    return get


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("config", LAYOUTS)
def test_plan_counts_what_each_rank_holds(measured, config, method):
    recipe, reports = measured(config, method)
    expected = planned(recipe)
    for report in reports:
        assert report["distributed"].startswith(f"{LAYOUTS[config]} over 2 processes (gloo)"), report
        assert not mismatches(report, expected), (report, expected)


@pytest.mark.parametrize("config", LAYOUTS)
def test_disk_check_counts_what_a_checkpoint_holds(measured, config):
    # A full fine-tune's checkpoint is every rank's weights and optimizer states; the disk check asks
    # before the Trainer prepares the model, so it must foresee FSDP2's upcast and DeepSpeed's masters.
    _, reports = measured(config, "full")
    holds = sum(report["weights"] + report["optimizer states"] for report in reports)
    if config == "ddp":
        holds //= 2  # DDP's ranks hold the same replica; the checkpoint has one
    assert abs(reports[0]["checkpoint"] / holds - 1) <= TOLERANCE, (reports[0]["checkpoint"], holds)


def test_the_comparison_fails_when_the_optimizer_bytes_are_wrong(measured, monkeypatch):
    recipe, reports = measured("fsdp2", "full")
    assert not mismatches(reports[0], planned(recipe))
    # As the plan was before: AdamW's moments counted in bf16, not in the fp32 of accelerate's upcast.
    real = memory.optimizer_state_bytes
    monkeypatch.setattr(memory, "optimizer_state_bytes", lambda optim, held, deepspeed: real(optim, 2, deepspeed))
    assert set(mismatches(reports[0], planned(recipe))) == {"optimizer states"}
