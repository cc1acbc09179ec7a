"""`ossft plan`: per-GPU memory of a recipe before a GPU is rented, and what to change when it won't fit.

The estimate adds what one GPU holds at its peak:
- weights, gradients and optimizer states, divided over the ranks that shard them (FSDP, ZeRO-3),
  or moved to CPU by offload;
- activations: with activation checkpointing, each layer's input kept for the backward pass, plus the
  one layer being recomputed (eager attention's score matrix, the experts' intermediate, and for expert
  LoRA the delta PEFT builds for the whole expert stack, docs/traps.md#trap-5);
- the loss: TRL's fused LM head computes it in tiles and never holds the [tokens, 201,088] logits;
  only a tile, the hidden states' gradient and (full fine-tuning) the LM head's gradient. With full
  logits (label smoothing, other tools) they are the largest single activation;
- framework overhead (CUDA context, kernels' workspace) and the allocator's reserve over allocation.
The constants are physical (bytes per number); only the overhead and the reserve factor were fitted,
against Axolotl's published `device_mem_reserved` figures (see CALIBRATION and tests/test_plan.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ossft.gptoss.facts import ATTENTION_PROJECTIONS, Shape, model_shape
from ossft.units import GIB


@dataclass(frozen=True)
class Layout:
    gpus: int  # processes in all
    sharded: bool  # FSDP or ZeRO-3: weights, gradients, optimizer divided over the gpus
    offload_params: bool
    offload_optimizer: bool
    deepspeed: bool


@dataclass(frozen=True)
class Workload:
    """What one micro-step computes, independent of the tool that runs it (so published figures of
    other tools can be checked against the same arithmetic)."""

    seq: int
    micro_batch: int
    trainable: int
    optimizer_bytes: float  # per trainable parameter
    checkpointing: bool = True
    offload_activations: bool = False
    eager_attention: bool = True  # eager materializes the [heads, seq, seq] scores; flash kernels do not
    full_logits: bool = True  # False: a fused / chunked cross-entropy never holds [tokens, vocab]
    routed_experts: bool = True  # False: every token through every expert (transformers' eager experts)
    stacked_expert_lora: bool = False  # PEFT's whole-stack delta; the routed one adds only [tokens, r]


@dataclass
class Estimate:
    parts: dict[str, float] = field(default_factory=dict)  # bytes per GPU

    @property
    def allocated(self) -> float:
        return sum(v for k, v in self.parts.items() if k != "framework overhead")

    @property
    def reserved(self) -> float:
        return self.allocated * RESERVED_FACTOR + self.parts.get("framework overhead", 0.0)


# Fitted against Axolotl's five published device_mem_reserved figures (CALIBRATION): the CUDA
# context, NCCL buffers and cuBLAS workspace; and the caching allocator's reserve over allocation.
FRAMEWORK_OVERHEAD = 1.5 * GIB
RESERVED_FACTOR = 1.10
BF16 = 2
FP32 = 4


def trainable_params(shape: Shape, recipe) -> int:
    lora = recipe.lora
    if lora is None:
        return shape.total_params
    q = shape.heads * shape.head_dim
    kv = shape.kv_heads * shape.head_dim
    dims = {
        "q_proj": (shape.hidden, q),
        "k_proj": (shape.hidden, kv),
        "v_proj": (shape.hidden, kv),
        "o_proj": (q, shape.hidden),
    }
    attention = sum(lora.r * (i + o) for name, (i, o) in dims.items() if name in lora.target_modules)
    layers = _expert_layers(lora.experts, shape.layers)
    rank = lora.experts_r or lora.r
    experts = shape.experts * rank * ((shape.hidden + 2 * shape.intermediate) + (shape.intermediate + shape.hidden))
    return shape.layers * attention + len(layers) * experts


def _expert_layers(experts, layers: int) -> list[int]:
    if experts == "all":
        return list(range(layers))
    if experts == "none":
        return []
    return list(experts)


def workload_of(recipe, layout: Layout, shape: Shape) -> Workload:
    """ossft's own run: eager attention unless the recipe picks a kernel, TRL's fused LM head (full
    logits only with label smoothing, which TRL computes from them), routed experts (transformers 5's
    default grouped_mm)."""
    train = recipe.train
    return Workload(
        seq=train.max_length or 1024,
        micro_batch=train.per_device_train_batch_size,
        trainable=trainable_params(shape, recipe),
        optimizer_bytes=_optimizer_bytes_per_param(recipe, layout),
        checkpointing=bool(train.activation_checkpointing or train.gradient_checkpointing),
        eager_attention=recipe.model.attn_implementation == "eager",
        full_logits=bool(train.label_smoothing_factor),
        routed_experts=recipe.model.experts_implementation != "eager",
        stacked_expert_lora=recipe.lora is not None
        and recipe.lora.experts != "none"
        and recipe.lora.experts_delta == "stacked",
    )


def estimate(recipe, layout: Layout, shape: Shape | None = None) -> Estimate:
    shape = shape or model_shape(recipe.model.base_model)
    return estimate_workload(shape, workload_of(recipe, layout, shape), layout)


def estimate_workload(shape: Shape, w: Workload, layout: Layout) -> Estimate:
    share = layout.gpus if layout.sharded else 1
    layer_params = shape.attention_params + shape.expert_params
    parts: dict[str, float] = {}
    parts["weights"] = 0.0 if layout.offload_params else shape.total_params * BF16 / share
    parts["gradients"] = 0.0 if layout.offload_params else w.trainable * BF16 / share
    parts["optimizer states"] = 0.0 if layout.offload_optimizer else w.trainable * w.optimizer_bytes / share
    if layout.sharded:
        # FSDP / ZeRO-3 gather the layer being computed and prefetch the next (bf16), and hold the
        # layer's full gradient (reduced in fp32) before it is scattered; the root module (embeddings
        # and lm_head) is gathered whole.
        full_layer_grad = layer_params * FP32 if w.trainable == shape.total_params else 0
        parts["gathered layers"] = 2 * layer_params * BF16 + full_layer_grad + 2 * shape.vocab * shape.hidden * BF16
        if layout.offload_params:
            # Offloaded shards are copied to the GPU before the all-gather, and the reduce-scattered
            # gradient shard waits there for its copy back to the CPU.
            parts["gathered layers"] += (2 * layer_params * BF16 + layer_params * FP32) / layout.gpus
    tokens = w.seq * w.micro_batch
    kept = tokens * shape.hidden * BF16 * shape.layers if w.checkpointing and not w.offload_activations else 0
    layer = _layer_activations(shape, w)
    parts["activations"] = kept + layer * (1 if w.checkpointing else shape.layers)
    parts["LM head and loss"] = _loss_memory(shape, w, tokens)
    parts["framework overhead"] = FRAMEWORK_OVERHEAD
    return Estimate(parts)


# TRL's fused LM head (trl/kernels/chunked_logprob.py, TRL 1.16): the logits are made one tile of
# 4096 tokens x 32768 vocabulary entries at a time and folded into running log-sum-exp statistics;
# the backward makes each tile again and turns it into its gradient in place.
LOSS_TILE_TOKENS = 4096
LOSS_TILE_VOCAB = 32768


def _loss_memory(shape: Shape, w: Workload, tokens: int) -> float:
    if w.full_logits:
        return tokens * shape.vocab * (BF16 + 2 * FP32)  # logits in bf16, their fp32 copy, its gradient
    tile = min(tokens, LOSS_TILE_TOKENS) * min(shape.vocab, LOSS_TILE_VOCAB) * BF16
    trained_hidden = tokens * shape.hidden * (BF16 + FP32)  # gathered, and their gradient summed in fp32
    # The LM head's own gradient exists only when it trains; it is summed over the tiles in fp32.
    head_grad = shape.vocab * shape.hidden * FP32 if w.trainable == shape.total_params else 0
    return tile + trained_hidden + head_grad


def _optimizer_bytes_per_param(recipe, layout: Layout) -> float:
    optim = str(getattr(recipe.train.optim, "value", recipe.train.optim))
    if layout.deepspeed:
        return 12  # fp32 master weights and two fp32 moments
    if "8bit" in optim:
        return 2
    return 2 * BF16  # AdamW's two moments, in the dtype of the bf16 parameters


def _layer_activations(shape: Shape, w: Workload) -> float:
    """Peak of one decoder layer's forward and backward: what recomputation needs at once."""
    tokens = w.seq * w.micro_batch
    qkv = tokens * (2 * shape.heads + 2 * shape.kv_heads) * shape.head_dim * BF16
    scores = w.micro_batch * shape.heads * w.seq * w.seq * (BF16 + FP32) if w.eager_attention else 0
    through = tokens * (shape.top_k if w.routed_experts else shape.experts)
    # gate_up output (2I), the gated product (I), down output (H): kept for backward, plus their gradients
    experts = 2 * through * (3 * shape.intermediate + shape.hidden) * BF16
    # PEFT's stacked LoRA builds the delta of the whole expert stack each forward (trap 5), and its gradient
    lora_delta = 2 * shape.expert_params * BF16 if w.stacked_expert_lora else 0
    # Training the experts themselves: their weight gradient exists whole, for experts no token
    # reached too, and autograd holds a second buffer while it accumulates the per-expert parts.
    expert_grads = 2 * shape.expert_params * BF16 if w.trainable == shape.total_params else 0
    return qkv + scores + experts + lora_delta + expert_grads + 6 * tokens * shape.hidden * BF16


def describe(e: Estimate) -> list[tuple[str, str]]:
    rows = [(k, f"{v / GIB:,.1f} GiB") for k, v in e.parts.items()]
    rows.append(("allocated (sum)", f"{e.allocated / GIB:,.1f} GiB"))
    rows.append((f"reserved (x{RESERVED_FACTOR:.2f} + overhead)", f"{e.reserved / GIB:,.1f} GiB"))
    return rows


def longest_sequence(recipe, layout: Layout, gpu_memory_gib: float, step: int = 1024) -> int:
    """The longest train.max_length, a multiple of `step`, whose estimate fits; 0 when not even `step` does."""
    shape = model_shape(recipe.model.base_model)
    workload = workload_of(recipe, layout, shape)

    def fits_at(seq: int) -> bool:
        return fits(estimate_workload(shape, replace(workload, seq=seq), layout), gpu_memory_gib)

    return longest_passing(fits_at, start=step, step=step, cap=MAX_SEQUENCE)


MAX_SEQUENCE = 1 << 20  # tokens; the search stops there (gpt-oss itself is trained to 131,072)


def longest_passing(passes, start: int, step: int, cap: int) -> int:
    """The longest length that `passes`, for a test that passes below some length and fails above it
    (memory grows with the sequence): doubling from `start` until a length fails or doubling would pass
    `cap`, then halving the gap down to `step`. 0 when `start` fails. Shared by `ossft plan` (an
    estimate per length) and scripts/bench/gpu_lora.py --longest (a training run per length)."""
    if not passes(start):
        return 0
    low = start
    while True:
        if low * 2 > cap:
            return low
        if not passes(low * 2):
            break
        low *= 2
    high = low * 2
    while high - low > step:
        middle = max((low + high) // 2 // step * step, low + step)
        if middle >= high:
            break
        low, high = (middle, high) if passes(middle) else (low, middle)
    return low


def fits(e: Estimate, gpu_memory_gib: float) -> bool:
    return e.reserved <= gpu_memory_gib * GIB * 0.95  # 5% for what no estimate sees


def suggestions(recipe, layout: Layout, e: Estimate, gpu_memory_gib: float) -> list[str]:
    if fits(e, gpu_memory_gib):
        return []
    ideas = []
    if not layout.sharded:
        ideas.append(
            f"shard the weights over several GPUs: launch.accelerate_config: {'zero3' if recipe.lora else 'fsdp2'} with --gpus 2 or more"
        )
    else:
        ideas.append(f"more GPUs to shard over: --gpus {layout.gpus * 2}")
        if not layout.offload_params:
            ideas.append("offload parameters to CPU: launch.accelerate_config: fsdp2-offload (or zero3-offload)")
    per_token = e.parts.get("activations", 0) + e.parts.get("LM head and loss", 0)
    over = e.reserved - gpu_memory_gib * GIB * 0.95
    if per_token * RESERVED_FACTOR > over:  # fewer tokens alone could close the gap
        ideas.append(
            f"fewer tokens per micro-step: train.max_length (now {recipe.train.max_length}) or "
            f"train.per_device_train_batch_size (now {recipe.train.per_device_train_batch_size}, raise "
            "gradient_accumulation_steps to keep the global batch)"
        )
    if recipe.lora is None:
        ideas.append("LoRA instead of full fine-tuning (a lora: section)")
    return ideas


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


def checkpoint_bytes(recipe, layout: Layout, shape: Shape | None = None) -> tuple[float, float]:
    """(one checkpoint, the final save) in bytes, all ranks together: weights saved (trainable ones for
    LoRA), optimizer states, and the final weights."""
    shape = shape or model_shape(recipe.model.base_model)
    trainable = trainable_params(shape, recipe)
    saved = trainable * BF16 if recipe.lora is not None else shape.total_params * BF16
    return saved + trainable * _optimizer_bytes_per_param(recipe, layout), saved


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
    """What `ossft plan` prints: the per-GPU table, the longest length that fits, and the verdict."""

    gpus: int  # processes in all
    rows: list[tuple[str, str]]  # (what, how much): memory per GPU, then disk
    longest: str  # the longest train.max_length that fits, in words
    gpu_memory: float  # GiB of one GPU
    fits: bool
    suggestions: list[str]  # what to change when it does not fit


def plan_report(recipe, gpus: int | None, nodes: int | None, gpu_memory_gib: float) -> PlanReport:
    """The recipe's memory per GPU and disk on `gpus` per node x `nodes` (default: the recipe's)."""
    per_node = gpus or (recipe.launch.num_processes or 1) // recipe.launch.num_machines
    layout = layout_for(recipe, per_node, nodes or recipe.launch.num_machines)
    e = estimate(recipe, layout)
    checkpoint, final = checkpoint_bytes(recipe, layout)
    rows = [
        *describe(e),
        ("disk: one checkpoint", f"{checkpoint / GIB:,.1f} GiB"),
        ("disk: final save", f"{final / GIB:,.1f} GiB"),
    ]
    longest = longest_sequence(recipe, layout, gpu_memory_gib)
    batch = recipe.train.per_device_train_batch_size
    words = (
        f"longest train.max_length that fits at micro-batch {batch}: {longest:,} tokens"
        if longest
        else f"not even 1,024 tokens fit at micro-batch {batch}"
    )
    ideas = suggestions(recipe, layout, e, gpu_memory_gib)
    return PlanReport(layout.gpus, rows, words, gpu_memory_gib, fits(e, gpu_memory_gib), ideas)


# Axolotl's published device_mem_reserved figures (examples/gpt-oss/README.md, Aug 2025) and the
# settings of the example YAML each comes from: sequence_len 4096 packed, micro-batch 1, activation
# checkpointing with activation offloading, cut cross-entropy, flash attention (vllm-flash-attn3).
def _axolotl_workload(shape: Shape, trainable: int, optimizer_bytes: float) -> Workload:
    return Workload(
        seq=4096,
        micro_batch=1,
        trainable=trainable,
        optimizer_bytes=optimizer_bytes,
        offload_activations=True,
        eager_attention=False,
        full_logits=False,
    )


# (setting, published GiB per GPU, model, LoRA on the attention projections?, optimizer bytes per
# trainable parameter, GPUs, offload); all FSDP2-sharded but the single-GPU LoRA.
AXOLOTL_FIGURES = [
    ("20b LoRA, 1 GPU", 44, "openai/gpt-oss-20b", True, 2, 1, False),  # r=8 q/k/v/o, adamw_torch_8bit, 1x 48 GB
    ("20b full, FSDP2 offload, 2 GPUs", 21, "openai/gpt-oss-20b", False, 4, 2, True),  # adamw_torch_fused, 2x 24 GB
    ("20b full, FSDP2, 8 GPUs", 36, "openai/gpt-oss-20b", False, 2, 8, False),  # adamw_torch_8bit, 8x 48 GB
    ("20b full, FSDP2, 4 GPUs", 46, "openai/gpt-oss-20b", False, 2, 4, False),  # the same YAML on 4x 80 GB
    ("120b full, FSDP2 offload, 8 GPUs", 49, "openai/gpt-oss-120b", False, 4, 8, True),  # bf16 copy, 8x 80 GB
]


def calibration() -> list[tuple[str, float, float]]:
    """(setting, published GiB per GPU, ossft plan's estimate GiB) for Axolotl's five figures."""
    from types import SimpleNamespace

    attention_r8 = SimpleNamespace(
        r=8, target_modules=list(ATTENTION_PROJECTIONS), experts="none", experts_r=None
    )
    rows = []
    for name, published, model, lora, optimizer_bytes, gpus, offload in AXOLOTL_FIGURES:
        shape = model_shape(model)
        trainable = trainable_params(shape, SimpleNamespace(lora=attention_r8)) if lora else shape.total_params
        layout = Layout(gpus, sharded=gpus > 1, offload_params=offload, offload_optimizer=offload, deepspeed=False)
        estimate = estimate_workload(shape, _axolotl_workload(shape, trainable, optimizer_bytes), layout)
        rows.append((name, published, estimate.reserved / GIB))
    return rows
