"""accelerate_configs/*.yaml, read by accelerate's own launcher and turned into accelerate's own plugins.

Each config goes through `accelerate launch --config_file FILE -m ossft train ...` up to the moment the
launcher would start processes (its process starters are swapped for recorders), so the file is parsed,
checked for unknown keys and merged with the flags exactly as on a cluster. The environment the
launcher would give each process (ACCELERATE_* / FSDP_*) is then set here, and the plugins are built
from it as `Accelerator()` builds them in each process. None of this needs a GPU or a process group.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "accelerate_configs"

FSDP = {"fsdp2.yaml": {"offload": False}, "fsdp2-offload.yaml": {"offload": True}}
ZERO3 = {"zero3.yaml": {"offload": "none"}, "zero3-offload.yaml": {"offload": "cpu"}}
DDP = {"ddp.yaml"}


def launch(monkeypatch, config: str, *flags: str) -> dict:
    """What `accelerate launch --config_file CONFIG FLAGS -m ossft train r.yaml` would start: which
    launcher, its parsed arguments, and the ACCELERATE_* / FSDP_* variables each process gets."""
    from accelerate.commands import launch as cli
    from accelerate.utils import launch as env_builders

    for name in list(os.environ):
        if name.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.delenv(name)
    seen: dict = {}

    def multi_gpu(args):
        seen.update(kind="multi_gpu", args=args, env=env_builders.prepare_multi_gpu_env(args))

    def deepspeed(args):
        command, env = env_builders.prepare_deepspeed_cmd_env(args)
        seen.update(kind="deepspeed", args=args, env=env, command=command)

    def simple(args):
        seen.update(kind="simple", args=args, env={})

    monkeypatch.setattr(cli, "multi_gpu_launcher", multi_gpu)
    monkeypatch.setattr(cli, "deepspeed_launcher", deepspeed)
    monkeypatch.setattr(cli, "simple_launcher", simple)
    argv = ["--config_file", str(CONFIGS / config), *flags, "-m", "ossft", "train", "recipe.yaml"]
    cli.launch_command(cli.launch_command_parser().parse_args(argv))
    seen["env"] = {k: v for k, v in seen["env"].items() if k.startswith(("ACCELERATE_", "FSDP_"))}
    return seen


def in_process_env(monkeypatch, launched: dict) -> None:
    """Set what the launcher sets for each process (monkeypatch undoes it after the test)."""
    for name, value in launched["env"].items():
        monkeypatch.setenv(name, value)


def precision_from_recipe(tmp_path, bf16: bool) -> str:
    """The mixed precision the Trainer hands to Accelerator(), under the launcher's environment.
    (use_cpu only lets bf16=True be constructed on this CPU machine; it does not change the answer.)"""
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(tmp_path), bf16=bf16, use_cpu=True).mixed_precision


def tiny_gpt_oss_on_meta():
    from transformers import GptOssConfig, GptOssForCausalLM

    config = GptOssConfig(
        num_hidden_layers=2,
        hidden_size=64,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_local_experts=4,
        num_experts_per_tok=2,
        vocab_size=128,
    )
    with torch.device("meta"):
        return GptOssForCausalLM(config)


def test_every_config_in_the_folder_is_tested_here():
    shipped = {path.name for path in CONFIGS.glob("*.yaml")}
    assert shipped == set(FSDP) | set(ZERO3) | DDP
    assert {path.name for path in CONFIGS.iterdir()} == shipped | {"README.md"}


@pytest.mark.parametrize("config", sorted(set(FSDP) | set(ZERO3) | DDP))
def test_each_config_opens_with_a_comment_and_is_described_in_the_readme(config):
    text = (CONFIGS / config).read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert f"`{config}`" in (CONFIGS / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("config", sorted(set(FSDP) | set(ZERO3) | DDP))
def test_the_file_sizes_one_node_of_eight_gpus_or_two_for_ddp(monkeypatch, config):
    launched = launch(monkeypatch, config)
    args = launched["args"]
    assert (args.num_processes, args.num_machines, args.nproc_per_node) == (
        (2, 1, "2") if config in DDP else (8, 1, "8")
    )


@pytest.mark.parametrize("config", sorted(set(FSDP) | set(ZERO3) | DDP))
def test_precision_is_left_to_the_recipe(monkeypatch, tmp_path, config):
    # bf16 in the config would win over a recipe's train.bf16: false (transformers reads the
    # launcher's ACCELERATE_MIXED_PRECISION and only overrides it when bf16 or fp16 is on).
    launched = launch(monkeypatch, config)
    assert launched["env"]["ACCELERATE_MIXED_PRECISION"] == "no"
    in_process_env(monkeypatch, launched)
    assert precision_from_recipe(tmp_path, bf16=True) == "bf16"
    assert precision_from_recipe(tmp_path, bf16=False) == "no"


@pytest.mark.parametrize("config", sorted(set(FSDP) | set(ZERO3) | DDP))
def test_more_nodes_come_from_flags_on_the_same_file(monkeypatch, config):
    flags = ["--num_machines", "2", "--num_processes", "16", "--machine_rank", "1"]
    flags += ["--main_process_ip", "10.1.2.3", "--main_process_port", "29555"]
    launched = launch(monkeypatch, config, *flags)
    args = launched["args"]
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("2", "8", 1)
    # torchrun's static rendezvous at node 0's address; every node runs the same command.
    assert (args.rdzv_backend, args.rdzv_endpoint) == ("static", "10.1.2.3:29555")
    if config in ZERO3:
        # The "standard" multi-node launcher: torchrun on every node, no pdsh, no hostfile.
        assert launched["command"] is None


@pytest.mark.parametrize("config", sorted(FSDP))
def test_fsdp_configs_build_the_fsdp2_plugin_ossft_expects(monkeypatch, tmp_path, config):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy
    from torch.distributed.fsdp.fully_sharded_data_parallel import StateDictType
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    launched = launch(monkeypatch, config)
    assert launched["kind"] == "multi_gpu"
    assert launched["env"]["ACCELERATE_USE_FSDP"] == "true"
    in_process_env(monkeypatch, launched)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.mixed_precision_policy is None
    # A recipe with bf16 on (the default on GPUs): AcceleratorState sets the policy from it.
    plugin.set_mixed_precision(precision_from_recipe(tmp_path, bf16=True))

    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True  # FULL_SHARD in FSDP2's terms
    assert plugin.sharding_strategy is None
    assert plugin.auto_wrap_policy is transformer_auto_wrap_policy
    assert plugin.transformer_cls_names_to_wrap == ["GptOssDecoderLayer"]
    assert plugin.state_dict_type == StateDictType.SHARDED_STATE_DICT
    if FSDP[config]["offload"]:
        assert isinstance(plugin.cpu_offload, CPUOffloadPolicy)
    else:
        assert type(plugin.cpu_offload) is OffloadPolicy  # the base class: no offload
    assert plugin.cpu_ram_efficient_loading is True
    assert plugin.sync_module_states is None  # obsolete in FSDP2
    # What ossft relies on: layers compute in bf16 and gradients are reduced in bf16. Whether the
    # forward's outputs are cast as well changed between releases (accelerate 1.15 set output_dtype
    # bf16, 1.16 leaves it None); with bf16 parameters the outputs are bf16 either way.
    policy = plugin.mixed_precision_policy
    assert isinstance(policy, MixedPrecisionPolicy)
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.bfloat16)
    assert policy.output_dtype in (None, torch.bfloat16)


@pytest.mark.parametrize("config", sorted(FSDP))
def test_fsdp_wraps_each_gpt_oss_decoder_layer(monkeypatch, config):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from transformers.models.gpt_oss import modeling_gpt_oss

    in_process_env(monkeypatch, launch(monkeypatch, config))
    plugin = FullyShardedDataParallelPlugin()
    plugin.set_auto_wrap_policy(tiny_gpt_oss_on_meta())  # what Accelerator.prepare does first

    assert plugin.auto_wrap_policy.keywords["transformer_layer_cls"] == {modeling_gpt_oss.GptOssDecoderLayer}


@pytest.mark.parametrize("config", sorted(FSDP))
def test_fsdp_leaves_activation_checkpointing_to_the_recipe(monkeypatch, config):
    # The Trainer refuses FSDP's activation checkpointing together with the training argument, and
    # ossft turns the training argument on by default.
    from accelerate.utils import FullyShardedDataParallelPlugin

    from ossft.recipe.train_section import TRAIN_DEFAULTS

    in_process_env(monkeypatch, launch(monkeypatch, config))
    plugin = FullyShardedDataParallelPlugin()

    assert TRAIN_DEFAULTS["activation_checkpointing"] is True
    assert plugin.activation_checkpointing is False
    assert plugin.activation_checkpointing_offload is False


def zero3_plugin(monkeypatch, tmp_path, config: str, bf16: bool = True):
    """The plugin as AcceleratorState leaves it, for a recipe with bf16 on (the default on GPUs) or off."""
    from accelerate.utils import DeepSpeedPlugin

    launched = launch(monkeypatch, config)
    assert launched["kind"] == "deepspeed"
    assert launched["env"]["ACCELERATE_USE_DEEPSPEED"] == "true"
    in_process_env(monkeypatch, launched)
    plugin = DeepSpeedPlugin()
    plugin.set_mixed_precision(precision_from_recipe(tmp_path, bf16))
    return plugin


@pytest.mark.parametrize("config", sorted(ZERO3))
def test_zero3_configs_build_the_deepspeed_config_ossft_expects(monkeypatch, tmp_path, config):
    plugin = zero3_plugin(monkeypatch, tmp_path, config)
    device = ZERO3[config]["offload"]

    assert (plugin.zero_stage, plugin.offload_optimizer_device, plugin.offload_param_device) == (3, device, device)
    assert plugin.zero3_init_flag is True
    assert plugin.zero3_save_16bit_model is True
    # Batch sizes, accumulation and clipping stay "auto": the Trainer fills them from the recipe.
    assert plugin.deepspeed_config == {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": {
            "stage": 3,
            "offload_optimizer": {"device": device, "nvme_path": None},
            "offload_param": {"device": device, "nvme_path": None},
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "steps_per_print": math.inf,
        "bf16": {"enabled": True},
        "fp16": {"enabled": False},
    }


@pytest.mark.parametrize("config", sorted(ZERO3))
def test_zero3_follows_a_recipe_with_bf16_off(monkeypatch, tmp_path, config):
    # The Trainer stops when DeepSpeed's bf16.enabled differs from train.bf16 (a CPU run, an fp32 run).
    plugin = zero3_plugin(monkeypatch, tmp_path, config, bf16=False)
    assert (plugin.deepspeed_config["bf16"], plugin.deepspeed_config["fp16"]) == (
        {"enabled": False},
        {"enabled": False},
    )


@pytest.mark.parametrize("config", sorted(ZERO3))
def test_zero3_makes_transformers_build_the_model_sharded(monkeypatch, tmp_path, config):
    # What `from_pretrained` checks to build the model inside deepspeed.zero.Init.
    pytest.importorskip("deepspeed")
    from transformers.integrations import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

    plugin = zero3_plugin(monkeypatch, tmp_path, config)
    assert is_deepspeed_zero3_enabled() is False
    try:
        plugin.select(_from_accelerator_state=True)  # what AcceleratorState does with the active plugin
        assert is_deepspeed_zero3_enabled() is True
    finally:
        unset_hf_deepspeed_config()


def test_ddp_is_plain_data_parallel(monkeypatch):
    launched = launch(monkeypatch, "ddp.yaml")
    assert launched["kind"] == "multi_gpu"
    assert launched["args"].multi_gpu is True
    assert "ACCELERATE_USE_FSDP" not in launched["env"]
    assert "ACCELERATE_USE_DEEPSPEED" not in launched["env"]
