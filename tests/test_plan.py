"""`ossft plan`: parameter counts exact, the memory estimate checked against published figures."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ossft.launch import memory, plan
from ossft.model.load import apply_lora, load_model, parameter_counts
from ossft.recipe.load import load_recipe
from tests.conftest import REPO


def test_released_models_have_their_published_parameter_counts():
    # OpenAI's model card: 20.9B and 116.8B parameters.
    assert memory.model_shape("openai/gpt-oss-20b").total_params == 20_914_757_184
    assert memory.model_shape("openai/gpt-oss-120b").total_params == 116_829_156_672


@pytest.mark.parametrize(
    "overrides",
    [[], ["lora.experts=[1]"], ["lora.experts=none", "lora.r=4"], ["lora.experts_r=2"], ["lora=null"]],
    ids=["experts-all", "experts-of-layer-1", "attention-only", "experts-rank-2", "full"],
)
def test_counts_equal_the_real_model(tiny_model_dir, overrides):
    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml", [f"model.base_model={tiny_model_dir}", *overrides])
    shape = memory.model_shape(str(tiny_model_dir))
    trainable, total = parameter_counts(apply_lora(load_model(recipe), recipe))
    adapter = trainable if recipe.lora is not None else 0  # the PEFT model's count includes the adapter
    assert (memory.trainable_params(shape, recipe), shape.total_params + adapter) == (trainable, total)


def test_estimates_against_axolotls_published_figures():
    # Axolotl's examples/gpt-oss README (device_mem_reserved, GiB per GPU), with the settings of the
    # YAML each figure comes from (bf16 weights: Axolotl's own FSDP2 preparation does not upcast); within
    # 10% each, and pinned so that a change shows up here.
    table = {name: (published, round(estimate, 1)) for name, published, estimate in plan.calibration()}
    assert table == {
        "20b LoRA, 1 GPU": (44, 45.7),
        "20b full, FSDP2 offload, 2 GPUs": (21, 21.0),
        "20b full, FSDP2, 8 GPUs": (36, 33.8),
        "20b full, FSDP2, 4 GPUs": (46, 49.9),
        "120b full, FSDP2 offload, 8 GPUs": (49, 50.3),
    }
    for published, estimate in table.values():
        assert abs(estimate / published - 1) <= 0.10


def test_layouts_come_from_the_accelerate_configs():
    def layout(name, *extra):
        return plan.layout_for(load_recipe(REPO / "recipes" / f"{name}.yaml", list(extra)))

    assert layout("gpt-oss-20b-lora-1gpu") == memory.Layout(1, False, False, False, False)
    assert layout("gpt-oss-20b-lora-2gpu") == memory.Layout(2, False, False, False, False)
    assert layout("gpt-oss-20b-full-8gpu") == memory.Layout(8, True, False, False, False)
    assert layout("gpt-oss-20b-full-offload-2gpu") == memory.Layout(2, True, True, True, False)
    assert layout("gpt-oss-120b-lora-8gpu") == memory.Layout(8, True, False, False, False)
    assert layout("gpt-oss-20b-lora-zero3-8gpu") == memory.Layout(8, True, False, False, True)
    assert layout("gpt-oss-120b-full-4node-h200") == memory.Layout(32, True, False, False, False)
    assert layout("gpt-oss-120b-lora-8gpu", "launch.accelerate_config=zero3-offload") == memory.Layout(
        8, True, True, True, True
    )


def test_plan_says_what_to_change_when_it_does_not_fit(cli):
    recipe = REPO / "recipes" / "gpt-oss-20b-lora-1gpu.yaml"
    bf16_experts = ("--set", "model.mxfp4_experts=false")
    fits = cli("plan", recipe, *bf16_experts)
    assert fits.exit_code == 0, fits.output
    assert "fits on 79.6 GiB GPUs" in fits.stdout and "weights" in fits.stdout and "39.0 GiB" in fits.stdout
    # By default a LoRA run keeps the MXFP4 experts so: 19.1B expert weights at 17/32 bytes, the rest bf16.
    assert "│ weights                     │ 12.9 GiB │" in cli("plan", recipe).stdout
    small = cli("plan", recipe, "--gpu-memory", "48", *bf16_experts)
    text = " ".join(small.stdout.split())
    assert small.exit_code == 0 and "does not fit on 48 GiB GPUs" in text
    assert "shard the weights over several GPUs: launch.accelerate_config: fsdp2" in text
    assert "fewer tokens per micro-step: train.max_length (now 2048)" in text


def test_train_warning_only_when_the_estimate_does_not_fit():
    recipe = load_recipe(REPO / "recipes" / "gpt-oss-20b-full-8gpu.yaml")
    layout = plan.layout_for(recipe)
    assert plan.memory_warning(recipe, layout, 80 * memory.GIB) is None
    warning = plan.memory_warning(recipe, layout, 24 * memory.GIB)
    assert warning.startswith("this run may not fit: ossft plan estimates ")
    assert "the GPU has 24.0 GiB" in warning and "more GPUs to shard over: --gpus 16" in warning


LORA_1GPU = REPO / "recipes" / "gpt-oss-20b-lora-1gpu.yaml"


def loss_part(*overrides) -> float:
    recipe = load_recipe(LORA_1GPU, ["train.max_length=4096", "train.per_device_train_batch_size=1", *overrides])
    return memory.estimate(recipe, plan.layout_for(recipe)).parts["LM head and loss"]


def test_loss_memory_follows_trls_fused_lm_head():
    # TRL's fused head holds one 4096 x 32768 bf16 tile, the trained positions' hidden states (bf16)
    # and their fp32 gradient; never the 4096 x 201,088 logits.
    tile = 4096 * 32768 * 2
    hidden = 4096 * 2880 * (2 + 4)
    assert loss_part() == tile + hidden
    # Full fine-tuning also sums the LM head's gradient in fp32.
    assert loss_part("lora=null") == tile + hidden + 201_088 * 2880 * 4
    # TRL computes label smoothing from the full logits: bf16 logits, their fp32 copy and its gradient.
    assert loss_part("train.label_smoothing_factor=0.1") == 4096 * 201_088 * (2 + 4 + 4)


@pytest.mark.parametrize(("attention", "longest"), [("eager", 8192), ("ossft_flex", 73_728)], ids=["eager", "flex"])
def test_longest_sequence_is_the_last_multiple_that_fits(attention, longest):
    # 20b, LoRA on attention and every expert, micro-batch 1, one 80 GiB GPU: eager attention's
    # [heads, seq, seq] scores stop it early; pinned so that a change of the estimate shows up here.
    overrides = [f"model.attn_implementation={attention}", "lora.experts=all", "train.per_device_train_batch_size=1"]
    overrides.append("model.mxfp4_experts=false")  # the experts in bf16; MXFP4 ones leave 20 GiB more
    recipe = load_recipe(LORA_1GPU, overrides)
    layout = plan.layout_for(recipe)
    found = memory.longest_sequence(recipe, layout, 80)
    assert found == longest

    def reserved_at(seq):
        return memory.estimate(load_recipe(LORA_1GPU, [*overrides, f"train.max_length={seq}"]), layout).reserved

    assert reserved_at(found) <= 0.95 * 80 * memory.GIB < reserved_at(found + 1024)


def test_the_plan_counts_eager_scores_over_a_packed_row_and_none_with_flex():
    recipe = load_recipe(LORA_1GPU, ["train.per_device_train_batch_size=4", "train.max_length=2048"])
    shape = memory.model_shape("openai/gpt-oss-20b")
    work = memory.workload_of(recipe, plan.layout_for(recipe), shape)
    assert work.packed and not work.eager_attention  # the recipe: ossft_flex with packing
    heads, scores_and_softmax = 64, 2 + 4
    padded_eager = replace(work, eager_attention=True, packed=False)
    assert memory._attention_memory(shape, padded_eager) == 4 * heads * 2048 * 2048 * scores_and_softmax
    # Packed, the 4 rows are one row of 8,192 tokens: eager's scores grow 4x.
    assert memory._attention_memory(shape, replace(work, eager_attention=True)) == heads * 8192**2 * scores_and_softmax
    # Flex: the fp32 lse of each query and head, and 2 block masks of 4 int32 [64, 64] block tables.
    assert memory._attention_memory(shape, work) == 8192 * heads * 4 + 2 * 4 * 64 * 64 * 4


def test_plan_prints_the_longest_sequence(cli):
    result = cli("plan", LORA_1GPU, "--set", "lora.experts=all", "--set", "model.mxfp4_experts=false")
    assert result.exit_code == 0, result.output
    assert "longest train.max_length that fits at micro-batch 4: 17,408 tokens (by attention: eager 1,024, ossft_flex 17,408)" in " ".join(result.stdout.split())
    tiny_gpu = cli("plan", LORA_1GPU, "--gpu-memory", "40", "--set", "model.mxfp4_experts=false")
    assert "not even 1,024 tokens fit at micro-batch 4" in tiny_gpu.stdout


def test_longest_sequence_stops_at_its_cap():
    recipe = load_recipe(LORA_1GPU, ["train.per_device_train_batch_size=1"])
    # 10 TiB of GPU memory: everything fits, and the search stops at its cap, which itself fits.
    assert memory.longest_sequence(recipe, plan.layout_for(recipe), 10 * 1024) == memory.MAX_SEQUENCE


@pytest.mark.parametrize(
    ("limit", "start", "step", "cap", "longest", "tried"),
    [
        (5000, 1024, 1024, 1 << 20, 4096, [1024, 2048, 4096, 8192, 6144, 5120]),
        (500, 1024, 1024, 1 << 20, 0, [1024]),
        (10**9, 256, 1024, 512, 512, [256, 512]),  # the cap passes: no bisection
        (5000, 3000, 1024, 1 << 20, 4096, [3000, 6000, 4096, 5120]),  # a start off the step grid still ends
    ],
)
def test_longest_passing_doubles_then_bisects(limit, start, step, cap, longest, tried):
    asked = []

    def passes(seq):
        asked.append(seq)
        return seq <= limit

    assert memory.longest_passing(passes, start=start, step=step, cap=cap) == longest
    assert asked == tried


GPU_RECIPES = sorted(p for p in (REPO / "recipes").glob("gpt-oss-*.yaml"))


@pytest.mark.parametrize("recipe", GPU_RECIPES, ids=lambda p: p.stem)
def test_every_gpu_recipe_fits_its_hardware_with_headroom(cli, recipe):
    import json

    result = cli("plan", recipe, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    declared = load_recipe(recipe).launch.gpu_memory_gib
    assert declared and report["gpu_memory_bytes"] == round(declared * memory.GIB)
    assert report["fits"] is True and report["headroom"] >= 0.10, report
    assert {"weights", "gradients", "optimizer_states"} <= set(report["parts"])
    assert report["reserved_bytes"] >= sum(report["parts"].values())  # the allocator's reserve on top
    # The header states the plan's figure, so that it cannot drift from the arithmetic.
    figure = f"ossft plan: {report['reserved_bytes'] / memory.GIB:.1f} GiB reserved"
    assert figure in recipe.read_text().split("\nmodel:")[0], figure


def static(recipe_overrides, layout, model="openai/gpt-oss-20b"):
    recipe = load_recipe(REPO / "recipes" / "gpt-oss-20b-full-8gpu.yaml", recipe_overrides)
    shape = memory.model_shape(model)
    return {k: v * layout.gpus / shape.total_params for k, v in memory.estimate(recipe, layout).held_parts().items()}


def test_static_bytes_per_parameter_follow_the_real_dtypes():
    fsdp = memory.Layout(8, True, False, False, False)
    ddp = memory.Layout(8, False, False, False, False)
    zero3 = memory.Layout(8, True, False, False, True)
    # accelerate's FSDP2 upcast under bf16: fp32 weights, gradients and AdamW moments.
    assert static([], fsdp) == {"weights": 4, "gradients": 4, "optimizer states": 8}
    # Without mixed precision the bf16 model trains as loaded (and so it does under DDP, per GPU).
    assert static(["train.bf16=false"], fsdp) == {"weights": 2, "gradients": 2, "optimizer states": 4}
    assert static([], ddp) == {k: 8 * v for k, v in {"weights": 2, "gradients": 2, "optimizer states": 4}.items()}
    # DeepSpeed: bf16 weights and gradient partitions, fp32 master and moments.
    assert static([], zero3) == {"weights": 2, "gradients": 2, "optimizer states": 12}
    # 8-bit AdamW: a byte per moment and an fp32 scale per 256 numbers.
    assert static(["train.optim=adamw_torch_8bit"], fsdp)["optimizer states"] == pytest.approx(2 * (1 + 4 / 256))


def test_offloaded_parts_leave_the_gpu_for_cpu_ram():
    recipe = load_recipe(REPO / "recipes" / "gpt-oss-20b-full-offload-2gpu.yaml")
    e = memory.estimate(recipe, plan.layout_for(recipe))
    assert all(e.parts[part] == 0 for part in memory.STATIC_PARTS)
    per_process = memory.model_shape("openai/gpt-oss-20b").total_params / 2  # sharded over 2
    assert e.offloaded == {"weights": 4 * per_process, "gradients": 4 * per_process, "optimizer states": 8 * per_process}


def test_plan_json_holds_the_parts_and_the_verdict(cli):
    import json

    result = cli("plan", REPO / "recipes" / "gpt-oss-20b-full-8gpu.yaml", "--json", "--gpu-memory", "40")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["fits"] is False and report["headroom"] < 0
    assert report["parts"]["optimizer_states"] == round(20_914_757_184 * 8 / 8)
    assert report["suggestions"] and report["gpu_memory_bytes"] == 40 * memory.GIB
