"""`ossft plan`: a recipe's memory per GPU and disk before a GPU is rented, whether it fits, and what to
change when it does not. The arithmetic is in memory.py; this reads the recipe's layout from its accelerate
config, words the verdict, and checks the arithmetic against the figures other tools publish."""

from __future__ import annotations

from dataclasses import dataclass

from ossft.gptoss.facts import ATTENTION_PROJECTIONS, FLEX_ATTENTION, Shape, model_shape
from ossft.launch.memory import (
    BF16,
    HEADROOM_KEPT,
    RESERVED_FACTOR,
    Estimate,
    Layout,
    Workload,
    estimate,
    estimate_workload,
    fits,
    headroom,
    longest_sequence,
    optimizer_state_bytes,
    static_parts,
    trainable_params,
    workload_of,
)
from ossft.units import GIB

DEFAULT_GPU_MEMORY_GIB = 80.0  # an 80 GB H100 or A100, when neither the recipe nor --gpu-memory says


def layout_for(recipe, gpus: int | None = None, nodes: int | None = None) -> Layout:
    """The recipe's sharding and offload, read from its accelerate config; `gpus` per node x `nodes`."""
    import yaml

    from ossft.launch.command import find_accelerate_config

    processes = (gpus * (nodes or 1)) if gpus else (recipe.launch.num_processes or 1)
    if gpus is None and nodes:
        processes = (recipe.launch.num_processes or 1) // recipe.launch.num_machines * nodes
    name = recipe.launch.accelerate_config
    config = yaml.safe_load(find_accelerate_config(name).read_text()) if name else {}
    kind = str(config.get("distributed_type", "NO")).upper()
    fsdp = config.get("fsdp_config") or {}
    ds = config.get("deepspeed_config") or {}
    if kind == "DEEPSPEED":
        return Layout(
            processes,
            sharded=int(ds.get("zero_stage", 3)) == 3,
            offload_params=ds.get("offload_param_device", "none") not in ("none", None),
            offload_optimizer=ds.get("offload_optimizer_device", "none") not in ("none", None),
            deepspeed=True,
        )
    offload = bool(fsdp.get("fsdp_offload_params", False))
    return Layout(processes, sharded=kind == "FSDP", offload_params=offload, offload_optimizer=offload, deepspeed=False)


def gpu_memory_of(recipe, asked: float | None) -> float:
    """GiB of one GPU: --gpu-memory, else the recipe's launch.gpu_memory_gib, else an 80 GB GPU."""
    return asked or recipe.launch.gpu_memory_gib or DEFAULT_GPU_MEMORY_GIB


def suggestions(recipe, layout: Layout, e: Estimate, gpu_memory_gib: float) -> list[str]:
    if fits(e, gpu_memory_gib):
        return []
    ideas = []
    if not layout.sharded:
        ideas.append(
            "shard the weights over several GPUs: launch.accelerate_config: fsdp2 with --gpus 2 or more"
        )
    else:
        ideas.append(f"more GPUs to shard over: --gpus {layout.gpus * 2}")
        if not layout.offload_params:
            ideas.append("offload parameters to CPU: launch.accelerate_config: fsdp2-offload (or zero3-offload)")
    optim = str(getattr(recipe.train.optim, "value", recipe.train.optim))
    if e.parts.get("optimizer states", 0) and "8bit" not in optim and not layout.deepspeed:
        ideas.append("8-bit AdamW moments, a quarter of fp32's: train.optim: adamw_torch_8bit (needs torchao)")
    if recipe.model.attn_implementation == "eager":
        ideas.append(
            f"no [heads, seq, seq] attention scores: model.attn_implementation: {FLEX_ATTENTION} (GPU; exact, packs)"
        )
    per_token = e.parts.get("activations", 0) + e.parts.get("LM head and loss", 0)
    over = e.reserved - gpu_memory_gib * GIB * (1 - HEADROOM_KEPT)
    if per_token * RESERVED_FACTOR > over:  # fewer tokens alone could close the gap
        ideas.append(
            f"fewer tokens per micro-step: train.max_length (now {recipe.train.max_length}) or "
            f"train.per_device_train_batch_size (now {recipe.train.per_device_train_batch_size}, raise "
            "gradient_accumulation_steps to keep the global batch)"
        )
    if recipe.lora is None:
        ideas.append("LoRA instead of full fine-tuning (a lora: section)")
    return ideas


def checkpoint_bytes(recipe, layout: Layout, shape: Shape | None = None) -> tuple[float, float]:
    """(one checkpoint, the final save) in bytes, all ranks together, in the dtypes the run holds them:
    the weights (the trainable ones for LoRA) and, in a checkpoint, the optimizer states."""
    shape = shape or model_shape(recipe.model.base_model)
    whole = Layout(1, False, False, False, layout.deepspeed)
    w = workload_of(recipe, layout, shape)
    held = static_parts(shape, w, whole)
    saved = w.trainable * w.trained_bytes if recipe.lora is not None else held["weights"]
    return saved + held["optimizer states"], saved


def memory_warning(recipe, layout: Layout, gpu_memory_bytes: float) -> str | None:
    """What `ossft train` says at the start on a GPU when the estimate does not fit."""
    e = estimate(recipe, layout)
    if fits(e, gpu_memory_bytes / GIB):
        return None
    ideas = suggestions(recipe, layout, e, gpu_memory_bytes / GIB)
    return (
        f"this run may not fit: ossft plan estimates {e.reserved / GIB:,.1f} GiB per GPU, the GPU has "
        f"{gpu_memory_bytes / GIB:,.1f} GiB. Consider: " + "; ".join(ideas) + ". (`ossft plan RECIPE` for the details.)"
    )


@dataclass(frozen=True)
class PlanReport:
    """What `ossft plan` prints (and, with --json, writes): memory per GPU, disk, and the verdict."""

    layout: Layout
    estimate: Estimate
    gpu_memory: float  # GiB of one GPU
    longest: int  # the longest train.max_length that fits, 0 when not even 1,024 tokens do
    longest_by_attention: dict[str, int]  # the same with eager attention and with a kernel (ossft_flex)
    micro_batch: int
    disk: tuple[float, float]  # bytes of one checkpoint and of the final save
    suggestions: list[str]  # what to change when it does not fit

    @property
    def fits(self) -> bool:
        return fits(self.estimate, self.gpu_memory)

    @property
    def headroom(self) -> float:
        return headroom(self.estimate, self.gpu_memory)

    def rows(self) -> list[tuple[str, str]]:
        e = self.estimate
        rows = [(k, f"{v / GIB:,.1f} GiB") for k, v in e.parts.items()]
        rows.append(("allocated (sum)", f"{e.allocated / GIB:,.1f} GiB"))
        rows.append((f"reserved (x{RESERVED_FACTOR:.2f} + overhead)", f"{e.reserved / GIB:,.1f} GiB"))
        rows.append(("headroom left on the GPU", f"{self.headroom:.0%}"))
        for part, held in e.offloaded.items():
            rows.append((f"CPU RAM per process: {part}", f"{held / GIB:,.1f} GiB"))
        rows.append(("disk: one checkpoint", f"{self.disk[0] / GIB:,.1f} GiB"))
        rows.append(("disk: final save", f"{self.disk[1] / GIB:,.1f} GiB"))
        return rows

    def longest_words(self) -> str:
        if not self.longest:
            return f"not even 1,024 tokens fit at micro-batch {self.micro_batch}"
        others = ", ".join(f"{name} {n:,}" for name, n in self.longest_by_attention.items())
        return (
            f"longest train.max_length that fits at micro-batch {self.micro_batch}: {self.longest:,} tokens "
            f"(by attention: {others})"
        )

    def as_json(self) -> dict:
        """Bytes throughout; `parts` per GPU, `offloaded_to_cpu` per process."""
        e = self.estimate
        return {
            "processes": self.layout.gpus,
            "layout": {
                "sharded": self.layout.sharded,
                "offload_params": self.layout.offload_params,
                "offload_optimizer": self.layout.offload_optimizer,
                "deepspeed": self.layout.deepspeed,
            },
            "gpu_memory_bytes": round(self.gpu_memory * GIB),
            "parts": {_key(k): round(v) for k, v in e.parts.items()},
            "offloaded_to_cpu": {_key(k): round(v) for k, v in e.offloaded.items()},
            "allocated_bytes": round(e.allocated),
            "reserved_bytes": round(e.reserved),
            "reserved_factor": RESERVED_FACTOR,
            "headroom": round(self.headroom, 4),
            "fits": self.fits,
            "longest_max_length": self.longest,
            "longest_max_length_by_attention": self.longest_by_attention,
            "disk": {"checkpoint_bytes": round(self.disk[0]), "final_save_bytes": round(self.disk[1])},
            "suggestions": self.suggestions,
        }


def _key(part: str) -> str:
    return part.replace(" ", "_")


def plan_report(recipe, gpus: int | None, nodes: int | None, gpu_memory_gib: float | None) -> PlanReport:
    """The recipe's memory per GPU and disk on `gpus` per node x `nodes` (default: the recipe's)."""
    per_node = gpus or (recipe.launch.num_processes or 1) // recipe.launch.num_machines
    layout = layout_for(recipe, per_node, nodes or recipe.launch.num_machines)
    memory = gpu_memory_of(recipe, gpu_memory_gib)
    e = estimate(recipe, layout)
    return PlanReport(
        layout,
        e,
        memory,
        longest_sequence(recipe, layout, memory),
        {
            "eager": longest_sequence(recipe, layout, memory, eager_attention=True),
            FLEX_ATTENTION: longest_sequence(recipe, layout, memory, eager_attention=False),
        },
        recipe.train.per_device_train_batch_size,
        checkpoint_bytes(recipe, layout),
        suggestions(recipe, layout, e, memory),
    )


# Axolotl's published device_mem_reserved figures (examples/gpt-oss/README.md, Aug 2025) and the
# settings of the example YAML each comes from: sequence_len 4096 packed, micro-batch 1, activation
# checkpointing with activation offloading, cut cross-entropy, flash attention (vllm-flash-attn3).
# Axolotl replaces accelerate's FSDP2 preparation with its own (src/axolotl/monkeypatch/accelerate/fsdp2.py,
# patch_accelerate_fsdp2), which does not upcast: its full fine-tunes hold bf16 weights, bf16 gradients
# and optimizer states that follow them. ossft runs accelerate's own, and holds fp32 (memory.py).
def _axolotl_workload(trainable: int, adapter: bool, optimizer_bytes: float) -> Workload:
    return Workload(
        seq=4096,
        micro_batch=1,
        trainable=trainable,
        adapter=adapter,
        optimizer_bytes=optimizer_bytes,
        trained_bytes=BF16,
        offload_activations=True,
        eager_attention=False,
        full_logits=False,
    )


# (setting, published GiB per GPU, model, LoRA on the attention projections?, optimizer, GPUs, offload);
# all FSDP2-sharded but the single-GPU LoRA.
AXOLOTL_FIGURES = [
    ("20b LoRA, 1 GPU", 44, "openai/gpt-oss-20b", True, "adamw_torch_8bit", 1, False),  # r=8 q/k/v/o, 1x 48 GB
    ("20b full, FSDP2 offload, 2 GPUs", 21, "openai/gpt-oss-20b", False, "adamw_torch_fused", 2, True),  # 2x 24 GB
    ("20b full, FSDP2, 8 GPUs", 36, "openai/gpt-oss-20b", False, "adamw_torch_8bit", 8, False),  # 8x 48 GB
    ("20b full, FSDP2, 4 GPUs", 46, "openai/gpt-oss-20b", False, "adamw_torch_8bit", 4, False),  # same YAML, 4x 80 GB
    ("120b full, FSDP2 offload, 8 GPUs", 49, "openai/gpt-oss-120b", False, "adamw_torch_fused", 8, True),  # 8x 80 GB
]


def calibration() -> list[tuple[str, float, float]]:
    """(setting, published GiB per GPU, ossft plan's estimate GiB) for Axolotl's five figures."""
    from types import SimpleNamespace

    attention_r8 = SimpleNamespace(r=8, target_modules=list(ATTENTION_PROJECTIONS), experts="none", experts_r=None)
    rows = []
    for name, published, model, lora, optim, gpus, offload in AXOLOTL_FIGURES:
        shape = model_shape(model)
        trainable = trainable_params(shape, SimpleNamespace(lora=attention_r8)) if lora else shape.total_params
        layout = Layout(gpus, sharded=gpus > 1, offload_params=offload, offload_optimizer=offload, deepspeed=False)
        workload = _axolotl_workload(trainable, lora, optimizer_state_bytes(optim, BF16, deepspeed=False))
        rows.append((name, published, estimate_workload(shape, workload, layout).reserved / GIB))
    return rows

