"""DeepSpeed ZeRO-3 with 2 CPU processes through the real launcher (gloo), LoRA and full fine-tuning.

On CPU accelerate picks no process-group backend and counts one process while DeepSpeed runs a gloo
group of two; ossft sets train.ddp_backend=gloo there (ossft/train/config.py), which makes them agree.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO
from tests.test_distributed_train import finish, free_port, ossft, recipe_args

pytestmark = pytest.mark.e2e  # ZeRO-3 training on two processes

pytest.importorskip("deepspeed")


def test_zero3_lora_on_two_cpu_processes(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    args = recipe_args(tiny_model_dir, out, "launch.accelerate_config=zero3")
    code, log = finish(ossft(*args, "--nproc", "2", "--master-port", free_port()))
    assert code == 0, log[-3000:]
    assert f"--config_file {REPO / 'accelerate_configs' / 'zero3.yaml'}" in log
    assert "saved and read back: 24 tensors of the LoRA adapter" in " ".join(log.split())
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["processes"], summary["steps"], summary["replicas_identical"]) == (2, 4, None)
    assert summary["trainable_parameters"] == 27_648  # counted from ds_numel: ZeRO-3 leaves numel() 0
    adapter = load_file(out / "adapter_model.safetensors")
    assert any(name.endswith("lora_B.weight") and adapter[name].abs().sum() > 0 for name in adapter)


def every_tensor_split(tmp_path):
    """An accelerate config whose DeepSpeed config splits every tensor (persistence threshold 0)."""
    ds = tmp_path / "ds.json"
    ds.write_text(
        json.dumps(
            {
                "zero_optimization": {
                    "stage": 3,
                    "stage3_param_persistence_threshold": 0,
                    "stage3_gather_16bit_weights_on_model_save": True,
                },
                "train_micro_batch_size_per_gpu": "auto",
                "gradient_accumulation_steps": "auto",
                "train_batch_size": "auto",
                "gradient_clipping": "auto",
                "bf16": {"enabled": "auto"},
            }
        )
    )
    config = tmp_path / "zero3-split.yaml"
    config.write_text(
        "distributed_type: DEEPSPEED\nnum_machines: 1\nnum_processes: 2\n"
        f"deepspeed_config:\n  deepspeed_config_file: {ds}\n  zero3_init_flag: true\n"
    )
    return config


def test_zero3_full_fine_tuning_with_every_tensor_partitioned(tiny_model_dir, tmp_path):
    # The tiny model's tensors are all below DeepSpeed's default persistence threshold (1e5 elements),
    # so by default none is split. Threshold 0 splits every one, as on a real model: the save must be
    # gathered and verified from the gathered weights, not from rank 0's slices.
    config = every_tensor_split(tmp_path)
    out = tmp_path / "out"
    args = recipe_args(tiny_model_dir, out, f"launch.accelerate_config={config}", "lora=null")
    code, log = finish(ossft(*args, "--nproc", "2", "--master-port", free_port()))
    assert code == 0, log[-3000:]
    assert "saved and read back: 37 tensors of the GptOssForCausalLM" in " ".join(log.split())
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"]
    base = load_file(tiny_model_dir / "model.safetensors")
    trained = dict(model.state_dict())
    assert any(not torch.equal(trained[name], base[name]) for name in base)  # the weights moved


def test_zero3_routed_expert_lora_with_every_tensor_partitioned(tiny_model_dir, tmp_path):
    # The routed expert LoRA reads the experts' weights and the lora_A/lora_B factors from the outer PEFT
    # wrapper's forward, not from the modules that own them: DeepSpeed must gather them all the same.
    out = tmp_path / "out"
    config = every_tensor_split(tmp_path)
    args = recipe_args(tiny_model_dir, out, f"launch.accelerate_config={config}", "lora.experts_delta=routed")
    code, log = finish(ossft(*args, "--nproc", "2", "--master-port", free_port()))
    assert code == 0, log[-3000:]
    assert "saved and read back: 24 tensors of the LoRA adapter" in " ".join(log.split())
    adapter = load_file(out / "adapter_model.safetensors")
    experts_b = [name for name in adapter if "experts" in name and name.endswith("lora_B.weight")]
    assert experts_b and all(adapter[name].abs().sum() > 0 for name in experts_b)  # the experts' LoRA trained
