"""The memory arithmetic of `ossft plan`: what one GPU holds at its peak, part by part.

Static parts, per process, by the dtypes the libraries really keep (checked against the bytes two CPU
processes hold after an optimizer step, tests/test_memory_accounting.py):
- weights: the frozen ones in the dtype the model loads in; the trainable ones in the dtype they train in.
  FSDP2 with mixed precision trains fp32 master weights: accelerate upcasts every trainable parameter
  before sharding ("Upcast to fp32 master weights", accelerate/utils/fsdp_utils.py, 1.16). PEFT keeps a
  LoRA adapter in fp32 over a bf16 base (get_peft_model's autocast_adapter_dtype). DeepSpeed casts the
  module to bf16 and keeps its fp32 master copy with the optimizer;
- gradients: in the trained parameter's dtype; DeepSpeed's gradient partitions in bf16;
- optimizer states: what `train.optim` keeps per trained parameter (optimizer_state_bytes);
each divided over the processes that shard them (FSDP, ZeRO-3), and held in CPU RAM when offloaded.
Then what comes and goes: the layers FSDP / ZeRO-3 gather, activations, the loss, the framework.
Only the framework overhead and the allocator's reserve factor are fitted, against Axolotl's published
`device_mem_reserved` figures (plan.calibration(); README.md, "Will it fit?").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ossft.gptoss.facts import DEQUANTIZED_CHUNK_BYTES, MXFP4_BYTES_PER_WEIGHT, Shape, model_shape
from ossft.units import GIB

BF16 = 2
FP32 = 4
STATIC_PARTS = ("weights", "gradients", "optimizer states")


@dataclass(frozen=True)
class Layout:
    gpus: int  # processes in all
    sharded: bool  # FSDP or ZeRO-3: weights, gradients, optimizer divided over the gpus
    offload_params: bool
    offload_optimizer: bool
    deepspeed: bool


@dataclass(frozen=True)
class Workload:
    """What one micro-step computes and keeps, independent of the tool that runs it (so published
    figures of other tools can be checked against the same arithmetic)."""

    seq: int
    micro_batch: int
    trainable: int
    optimizer_bytes: float  # per trainable parameter
    adapter: bool = False  # the trainable parameters are a LoRA adapter's, added to the model's own
    trained_bytes: int = BF16  # per trainable parameter, as held (fp32 master weights: 4)
    frozen_bytes: int = BF16  # per frozen parameter; gradients are in the trained dtype
    checkpointing: bool = True
    offload_activations: bool = False
    eager_attention: bool = True  # eager materializes the [heads, seq, seq] scores; flex and flash kernels do not
    packed: bool = False  # the micro-batch flattened into one row (TRL's padding_free / bfd packing)
    mxfp4_experts: bool = False  # frozen expert weights held as MXFP4 and dequantized a chunk at a time
    full_logits: bool = True  # False: a fused / chunked cross-entropy never holds [tokens, vocab]
    routed_experts: bool = True  # False: every token through every expert (transformers' eager experts)
    stacked_expert_lora: bool = False  # PEFT's whole-stack delta; the routed one adds only [tokens, r]


@dataclass
class Estimate:
    parts: dict[str, float] = field(default_factory=dict)  # bytes per GPU
    offloaded: dict[str, float] = field(default_factory=dict)  # bytes per process, in CPU RAM

    @property
    def allocated(self) -> float:
        return sum(v for k, v in self.parts.items() if k != "framework overhead")

    @property
    def reserved(self) -> float:
        return self.allocated * RESERVED_FACTOR + self.parts.get("framework overhead", 0.0)

    def held_parts(self) -> dict[str, float]:
        """Bytes of each static part one process holds, on the GPU or offloaded."""
        return {part: self.parts.get(part, 0.0) + self.offloaded.get(part, 0.0) for part in STATIC_PARTS}


# Fitted against Axolotl's five published device_mem_reserved figures (plan.calibration()): the CUDA
# context, NCCL buffers and cuBLAS workspace; and the caching allocator's reserve over allocation.
FRAMEWORK_OVERHEAD = 1.5 * GIB
RESERVED_FACTOR = 1.10

# Optimizer state bytes per trained parameter, by train.optim, for a parameter of `p` bytes. AdamW keeps
# two moments like the parameter (torch: exp_avg, exp_avg_sq). The 8-bit AdamWs (torchao's AdamW8bit
# behind adamw_torch_8bit, bitsandbytes' behind adamw_bnb_8bit) keep each moment as one byte per number
# plus an fp32 scale per block of 256: 2 x (1 + 4/256). Adafactor keeps factored second moments (rows and
# columns, negligible); SGD without momentum nothing.
QUANT_BLOCK = 256
EIGHT_BIT_ADAM = 2 * (1 + FP32 / QUANT_BLOCK)


def optimizer_state_bytes(optim: str, param_bytes: int, deepspeed: bool) -> float:
    if deepspeed:
        # An fp32 master copy of every partition (a copy even of fp32 ones: measured) and two fp32 moments,
        # whatever the optimizer (deepspeed/runtime/zero/stage3.py, _create_fp32_partitions).
        return 3 * FP32
    if "8bit" in optim:
        return EIGHT_BIT_ADAM
    if optim.startswith(("sgd", "adafactor")):
        return 0
    return 2 * param_bytes


def load_bytes(recipe) -> int:
    """Bytes per number of the weights as loaded: gpt-oss checkpoints are bf16 (the MXFP4 experts are
    dequantized to bf16) unless model.dtype says otherwise."""
    return {"float32": FP32, "float16": BF16, "bfloat16": BF16, "auto": BF16}[recipe.model.dtype]


def mixed_precision(recipe) -> bool:
    """On a GPU ossft turns bf16 on when the recipe leaves it unset (train/config.py)."""
    return bool(recipe.train.fp16) or recipe.train.bf16 is not False


def trained_bytes(loaded: int, lora: bool, layout: Layout, mixed: bool) -> int:
    """Bytes per number of a trainable parameter as the run holds it, for weights loaded in `loaded`
    bytes and mixed precision on or off (see the module's docstring)."""
    if layout.deepspeed:
        return BF16 if mixed else loaded
    if lora or (layout.sharded and mixed):
        return max(loaded, FP32)  # PEFT's fp32 adapter; accelerate's FSDP2 fp32 master weights
    return loaded


def frozen_bytes(loaded: int, layout: Layout, mixed: bool) -> int:
    return BF16 if layout.deepspeed and mixed else loaded


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
    loaded, mixed = load_bytes(recipe), mixed_precision(recipe)
    held = trained_bytes(loaded, recipe.lora is not None, layout, mixed)
    optim = str(getattr(train.optim, "value", train.optim))
    return Workload(
        seq=train.max_length or 1024,
        micro_batch=train.per_device_train_batch_size,
        trainable=trainable_params(shape, recipe),
        adapter=recipe.lora is not None,
        optimizer_bytes=optimizer_state_bytes(optim, held, layout.deepspeed),
        trained_bytes=held,
        frozen_bytes=frozen_bytes(loaded, layout, mixed),
        checkpointing=bool(train.activation_checkpointing or train.gradient_checkpointing),
        eager_attention=recipe.model.attn_implementation == "eager",
        packed=is_packed(train),
        mxfp4_experts=recipe.experts_in_mxfp4(),
        full_logits=bool(train.label_smoothing_factor),
        routed_experts=recipe.model.experts_implementation != "eager",
        stacked_expert_lora=recipe.lora is not None
        and recipe.lora.experts != "none"
        and recipe.lora.experts_delta == "stacked",
    )


def is_packed(train) -> bool:
    """Does TRL flatten each micro-batch into one row? padding_free does; so does packing, but for its
    'wrapped' strategy (sft_trainer.py: padding_free or packing_strategy in {bfd, bfd_split})."""
    return bool(train.padding_free or (train.packing and train.packing_strategy != "wrapped"))


def estimate(recipe, layout: Layout, shape: Shape | None = None) -> Estimate:
    shape = shape or model_shape(recipe.model.base_model)
    return estimate_workload(shape, workload_of(recipe, layout, shape), layout)


def static_parts(shape: Shape, w: Workload, layout: Layout) -> dict[str, float]:
    """Weights, gradients and optimizer states one process holds, wherever they are."""
    share = layout.gpus if layout.sharded else 1
    frozen = shape.total_params if w.adapter else shape.total_params - w.trainable
    # MXFP4 experts are buffers, which neither FSDP2 nor ZeRO-3 shards: every process holds them whole.
    whole = shape.layers * expert_weights(shape) * MXFP4_BYTES_PER_WEIGHT if w.mxfp4_experts else 0
    sharded = frozen - (shape.layers * expert_weights(shape) if w.mxfp4_experts else 0)
    return {
        "weights": whole + (sharded * w.frozen_bytes + w.trainable * w.trained_bytes) / share,
        "gradients": w.trainable * w.trained_bytes / share,
        "optimizer states": w.trainable * w.optimizer_bytes / share,
    }


def estimate_workload(shape: Shape, w: Workload, layout: Layout) -> Estimate:
    static = static_parts(shape, w, layout)
    offloaded = {"weights": layout.offload_params, "gradients": layout.offload_params}
    offloaded["optimizer states"] = layout.offload_optimizer
    e = Estimate()
    for part, held in static.items():
        e.parts[part] = 0.0 if offloaded[part] else held
        if offloaded[part]:
            e.offloaded[part] = held
    layer_params = shape.attention_params + shape.expert_params
    if layout.sharded:
        # FSDP / ZeRO-3 gather the layer being computed and prefetch the next (bf16), and hold the
        # layer's full gradient (reduced in fp32) before it is scattered; the root module (embeddings
        # and lm_head) is gathered whole.
        full_layer_grad = layer_params * FP32 if w.trainable == shape.total_params else 0
        e.parts["gathered layers"] = 2 * layer_params * BF16 + full_layer_grad + 2 * shape.vocab * shape.hidden * BF16
        if layout.offload_params:
            # Offloaded shards are copied to the GPU before the all-gather, and the reduce-scattered
            # gradient shard waits there for its copy back to the CPU.
            e.parts["gathered layers"] += (2 * layer_params * BF16 + layer_params * FP32) / layout.gpus
    tokens = w.seq * w.micro_batch
    kept = tokens * shape.hidden * BF16 * shape.layers if w.checkpointing and not w.offload_activations else 0
    layer = _layer_activations(shape, w)
    e.parts["activations"] = kept + layer * (1 if w.checkpointing else shape.layers)
    e.parts["LM head and loss"] = _loss_memory(shape, w, tokens)
    e.parts["framework overhead"] = FRAMEWORK_OVERHEAD
    return e


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


def _layer_activations(shape: Shape, w: Workload) -> float:
    """Peak of one decoder layer's forward and backward: what recomputation needs at once."""
    tokens = w.seq * w.micro_batch
    qkv = tokens * (2 * shape.heads + 2 * shape.kv_heads) * shape.head_dim * BF16
    return qkv + _attention_memory(shape, w) + _beyond_attention(shape, w, tokens)


# flex attention's block size (torch.nn.attention.flex_attention._DEFAULT_SPARSE_BLOCK_SIZE).
FLEX_BLOCK = 128


def _attention_memory(shape: Shape, w: Workload) -> float:
    """Eager holds the scores and their softmax ([heads, query, key] each), over the whole flattened row
    when the batch is packed. Flex holds neither: its lse (fp32, one per query and head) for the backward,
    and the BlockMasks of both layer kinds (four int32 [rows, blocks, blocks] tables each)."""
    rows, length = (1, w.seq * w.micro_batch) if w.packed else (w.micro_batch, w.seq)
    if w.eager_attention:
        return rows * shape.heads * length * length * (BF16 + FP32)
    blocks = -(-length // FLEX_BLOCK)
    return rows * length * shape.heads * FP32 + 2 * 4 * rows * blocks * blocks * FP32


def expert_weights(shape: Shape) -> int:
    """One layer's expert weights without their biases (which stay bf16 in MXFP4 checkpoints)."""
    return shape.experts * 3 * shape.hidden * shape.intermediate


def _beyond_attention(shape: Shape, w: Workload, tokens: int) -> float:
    through = tokens * (shape.top_k if w.routed_experts else shape.experts)
    # gate_up output (2I), the gated product (I), down output (H): kept for backward, plus their gradients
    experts = 2 * through * (3 * shape.intermediate + shape.hidden) * BF16
    # PEFT's stacked LoRA builds the delta of the whole expert stack each forward (trap 5), and its gradient
    lora_delta = 2 * shape.expert_params * BF16 if w.stacked_expert_lora else 0
    # Training the experts themselves: their weight gradient exists whole, for experts no token
    # reached too, and autograd holds a second buffer while it accumulates the per-expert parts.
    expert_grads = 2 * shape.expert_params * BF16 if w.trainable == shape.total_params else 0
    # MXFP4 experts: one chunk dequantized for the forward's GEMM, and in the backward the chunk and its
    # transposed copy (expert_kernels.dequantized_grouped_matmul).
    projection = shape.experts * 2 * shape.hidden * shape.intermediate * BF16  # gate_up, the larger one
    dequantized = 2 * min(projection, DEQUANTIZED_CHUNK_BYTES) if w.mxfp4_experts else 0
    return experts + lora_delta + expert_grads + dequantized + 6 * tokens * shape.hidden * BF16


HEADROOM_KEPT = 0.05  # of the GPU, for what no estimate sees


def fits(e: Estimate, gpu_memory_gib: float) -> bool:
    return e.reserved <= gpu_memory_gib * GIB * (1 - HEADROOM_KEPT)


def headroom(e: Estimate, gpu_memory_gib: float) -> float:
    """The share of the GPU the estimate leaves free."""
    return 1 - e.reserved / (gpu_memory_gib * GIB)


def longest_sequence(
    recipe, layout: Layout, gpu_memory_gib: float, step: int = 1024, eager_attention: bool | None = None
) -> int:
    """The longest train.max_length, a multiple of `step`, whose estimate fits; 0 when not even `step` does.
    `eager_attention`: as the recipe says (None), or with eager (True) or a kernel (False) instead."""
    shape = model_shape(recipe.model.base_model)
    workload = workload_of(recipe, layout, shape)
    if eager_attention is not None:
        workload = replace(workload, eager_attention=eager_attention)

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
