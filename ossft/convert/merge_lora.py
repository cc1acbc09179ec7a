"""`ossft merge-lora ADAPTER_DIR --out DIR`: a LoRA adapter folded into its base gpt-oss, as one plain model.

Streamed, never loaded: the plan (every output tensor, its shape, which LoRA delta it gets, which shard it goes
to) is made from safetensors headers and the adapter alone, and every shape is checked before anything is
written. Then base tensors are read one at a time with `safe_open`, merged, and written one output shard at a
time. Memory stays near one output shard (`max_shard_size`, 5 GiB by default) plus the tensor in hand and the
adapter, so a 120b merge fits on any machine the model fits on once, unlike `merge_and_unload`, which needs the
whole model in memory (and Axolotl's or accelerate's merges, which also write one file with no config:
docs/traps.md#trap-8).

The delta, computed in float32 and added before the one cast back to the tensor's dtype:
- attention (and any other) Linear: `W [out, in] += s * B @ A`, with `A` [r, in], `B` [out, r] (transposed when
  the adapter was made with `fan_in_fan_out`);
- expert stacks through PEFT's `target_parameters` (`ParamWrapper`), for `W` [E, in, out] (`gate_up_proj`
  [E, H, 2I], `down_proj` [E, I, H]): `A` [r*E, in] is expert-major (`A.reshape(E, r, in)[e]`) while `B`
  [out, r*E] is expert-minor (`B.reshape(out, r, E)[:, :, e]`), and `W[e] += s * (B_e @ A_e).T`;
- `s = lora_alpha / r`, or `lora_alpha / sqrt(r)` with `use_rslora`; `r` and `lora_alpha` per target from
  `rank_pattern` / `alpha_pattern`, matched as PEFT matches them.

Several parameters of one module (gate_up_proj and down_proj of the same experts) are nested ParamWrappers, so
their adapter keys differ only by `base_layer.`: PEFT wraps them in the module's parameter registration order,
the last one outermost. The order is read from the architecture itself (built on the meta device, no memory).

An MXFP4 base (`quantization_config.quant_method == "mxfp4"`, experts as `..._blocks` / `..._scales`) is
dequantized while streaming to `dtype` and written under the plain names, without `quantization_config`
(docs/traps.md#trap-1). The result goes into a temporary folder beside `out_dir`, is read back and checked tensor by
tensor (`verify_model_folder`), and only then renamed to `out_dir`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ossft.checkpoints.disk_space import ensure_room
from ossft.checkpoints.dtypes import float_dtype
from ossft.checkpoints.layout import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    DEFAULT_MAX_SHARD_SIZE,
    copy_generation_config,
    copy_tokenizer,
    group_into_shards,
    require_empty_output,
    shard_names,
    write_index,
)
from ossft.checkpoints.read import (
    local_model_folder,
    model_weights,
    read_json_object,
    refuse_sharded_save,
    safetensors_header,
)
from ossft.checkpoints.verify import meta_model, tensor_digest, verify_model_folder
from ossft.errors import UserError
from ossft.files import staged_folder
from ossft.gptoss import mxfp4
from ossft.gptoss.facts import EXPERT_PARAMETERS, is_mxfp4

ADAPTER_PREFIX = "base_model.model."
ADAPTER_FIX = "Copy the adapter folder again, or merge one of the run's checkpoint-N folders instead."
# Adapter features that are more than low-rank deltas on existing weights: refused rather than half-merged.
UNSUPPORTED = ("use_dora", "lora_bias", "modules_to_save", "trainable_token_indices", "layer_replication")


@dataclass
class MergeReport:
    out_dir: Path
    shards: int
    tensors: int
    merged_tensors: list[str]  # base tensor names that got a LoRA delta, in file order
    seconds: float


@dataclass
class _Delta:
    """One LoRA target: what to add to the base tensor `target`."""

    target: str
    a: object  # torch.Tensor, float32
    b: object
    r: int
    scaling: float
    experts: int  # 0 for a Linear weight
    fan_in_fan_out: bool = False

    def fits(self) -> tuple[int, ...] | None:
        """The base shape this adapter pair was made for, or None if A and B do not even fit each other."""
        (a_rows, n_in), (n_out, b_cols) = self.a.shape, self.b.shape
        if self.experts:
            if a_rows != b_cols or a_rows % self.r:
                return None
            return (a_rows // self.r, n_in, n_out)
        if a_rows != b_cols:
            return None
        return (n_in, n_out) if self.fan_in_fan_out else (n_out, n_in)

    def add_to(self, weight, dtype):
        """`weight` + delta in float32, cast once to `dtype`; expert by expert, so fp32 copies stay small."""
        import torch

        if not self.experts:
            delta = self.b @ self.a
            delta = delta.T if self.fan_in_fan_out else delta
            return (weight.to(torch.float32) + self.scaling * delta).to(dtype)
        n_in, n_out = self.a.shape[1], self.b.shape[0]
        a = self.a.reshape(self.experts, self.r, n_in)
        b = self.b.reshape(n_out, self.r, self.experts)
        out = torch.empty(weight.shape, dtype=dtype)
        for e in range(self.experts):
            out[e] = (weight[e].to(torch.float32) + self.scaling * (b[:, :, e] @ a[e]).T).to(dtype)
        return out


@dataclass
class _Tensor:
    """One output tensor: its name, where it comes from, and what it becomes."""

    name: str
    shape: tuple[int, ...]
    nbytes: int  # as written
    sources: tuple[str, ...]  # base tensor names: (name,), or (blocks, scales) to dequantize


def merge_lora(
    adapter_dir: str | Path,
    out_dir: str | Path,
    base: str | Path | None = None,
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
    on_progress: Callable[[int, int], None] | None = None,
    dtype="bfloat16",
) -> MergeReport:
    """Merge the LoRA adapter in `adapter_dir` into its base model and write the result to `out_dir`.

    `base` overrides the adapter's `base_model_name_or_path` (a folder, or a Hub id in the local cache).
    `dtype` is what MXFP4 expert weights are dequantized to; every other tensor keeps the base's dtype.
    Peak memory is about one output shard (`max_shard_size`) plus the largest tensor and the adapter, so a
    120b merge runs wherever the 120b model fits once. `on_progress(done_bytes, total_bytes)` follows the
    tensor bytes written. Raises UserError, before writing anything, for whatever the user can fix.
    """

    start = time.perf_counter()
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    dtype = str(float_dtype(dtype)).removeprefix("torch.")
    if max_shard_size <= 0:
        raise UserError(f"the maximum shard size must be a positive number of bytes, got {max_shard_size}.")
    adapter_config, adapter = _read_adapter(adapter_dir)
    base_dir = _resolve_base(base, adapter_config, adapter_dir)
    config, headers = _read_base(base_dir)
    require_empty_output(out_dir)

    plan = _plan_tensors(base_dir, headers, is_mxfp4(config), dtype)
    deltas = _deltas(adapter_config, adapter, config, plan)
    shards = group_into_shards(plan, max_shard_size)
    total = sum(t.nbytes for t in plan)
    ensure_room(out_dir, total, "the merged model")

    with staged_folder(out_dir) as staging:
        written, done = {}, 0
        with _Reader(headers) as reader:
            for file, tensors in _shard_names(shards).items():
                state = {}
                for t in tensors:
                    state[t.name] = _build(t, reader, deltas.get(t.name), dtype)
                    written[t.name] = tensor_digest(state[t.name])
                    done += t.nbytes
                    if on_progress:
                        on_progress(done, total)
                _save(state, staging / file)
                del state
        write_index(staging, {t.name: file for file, ts in _shard_names(shards).items() for t in ts}, total)
        _write_config(config, staging, dtype)
        _copy_side_files(adapter_dir, base_dir, staging)
        verify_model_folder(staging, written)
    merged = [t.name for t in plan if t.name in deltas]
    return MergeReport(out_dir, len(shards), len(plan), merged, time.perf_counter() - start)


def _read_adapter(adapter_dir: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    if not adapter_dir.is_dir():
        raise UserError(f"adapter folder not found: {adapter_dir}. Pass the output folder of a LoRA `ossft train` run.")
    refuse_sharded_save(adapter_dir)
    config_file = adapter_dir / ADAPTER_CONFIG
    if not config_file.is_file():
        what = "a full model" if (adapter_dir / "config.json").is_file() else "no adapter_config.json"
        raise UserError(
            f"{adapter_dir} is not a LoRA adapter ({what}): there is nothing to merge. Pass the output folder "
            "(or a checkpoint-N folder) of a run whose recipe has a lora: section."
        )
    config = read_json_object(config_file, ADAPTER_FIX)
    if config.get("peft_type") != "LORA":
        raise UserError(f"{adapter_dir} holds a {config.get('peft_type')} adapter; merge-lora merges LoRA adapters.")
    for key in UNSUPPORTED:
        if config.get(key):
            raise UserError(f"{adapter_dir} sets {key}, which merge-lora cannot merge; it merges plain LoRA deltas.")
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise UserError(
            f"{adapter_dir} has adapter_config.json but no adapter_model.safetensors; was the save interrupted?"
        )
    safetensors_header(weights, ADAPTER_FIX)  # a file cut short is named here, not by load_file
    return config, load_file(weights)


def _resolve_base(base: str | Path | None, adapter_config: dict, adapter_dir: Path) -> Path:
    name = str(base) if base is not None else adapter_config.get("base_model_name_or_path")
    if not name:
        raise UserError(f"{adapter_dir}/adapter_config.json names no base model. Pass it with --base PATH.")
    folder = local_model_folder(name)
    if folder is None:
        how = "Check the path" if base is not None else "Pass the base model's folder with --base PATH"
        raise UserError(
            f"base model not found: '{name}' is not a local folder, nor a Hub id in the local cache. {how}."
        )
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} is not a model folder (no config.json). Pass the base model with --base PATH.")
    return folder


def _read_base(base_dir: Path) -> tuple[dict, dict[str, tuple[Path, dict]]]:
    """The base's config.json, and each tensor's shard and safetensors header entry (nothing else is read)."""
    config = read_json_object(base_dir / "config.json")
    if config.get("model_type") != "gpt_oss":
        raise UserError(f"{base_dir} is a {config.get('model_type')} model; merge-lora writes gpt-oss models.")
    headers = {}
    for file, header in model_weights(base_dir).items():  # every file checked whole, and the index with them
        headers.update((name, (file, header[name])) for name in sorted(header))
    return config, headers


def _plan_tensors(base_dir: Path, headers: dict, mxfp4_base: bool, dtype: str) -> list[_Tensor]:
    """Every output tensor, in the base's order, from the headers alone."""
    import torch

    plan = []
    for name, (_, entry) in headers.items():
        shape, (begin, end) = tuple(entry["shape"]), entry["data_offsets"]
        expert = mxfp4_base and name.removesuffix("_blocks").removesuffix("_scales").endswith(EXPERT_PARAMETERS)
        if not expert:
            plan.append(_Tensor(name, shape, end - begin, (name,)))
        elif name.endswith("_blocks"):
            plain = name.removesuffix("_blocks")
            if f"{plain}_scales" not in headers:
                raise UserError(f"{base_dir}: {name} has no {plain}_scales beside it; the MXFP4 checkpoint is broken.")
            experts, n_out, groups, _ = shape
            shape = (experts, groups * mxfp4.BLOCK, n_out)
            nbytes = math.prod(shape) * getattr(torch, dtype).itemsize
            plan.append(_Tensor(plain, shape, nbytes, (name, f"{plain}_scales")))
    return plan




def _deltas(adapter_config: dict, adapter: dict, config: dict, plan: list[_Tensor]) -> dict[str, _Delta]:
    """Base tensor name -> its delta; every adapter tensor used, every shape checked against the base."""
    from peft.utils.other import get_pattern_key

    foreign = sorted(k for k in adapter if not k.startswith(ADAPTER_PREFIX))
    if foreign:
        raise UserError(f"the adapter holds {foreign[0]}, not a PEFT LoRA tensor name; is it a PEFT adapter?")
    keys = {k.removeprefix(ADAPTER_PREFIX): k for k in adapter}
    used: set[str] = set()

    def pair(module: str, target: str, experts: int) -> _Delta:
        import torch

        r_key = get_pattern_key(list(adapter_config.get("rank_pattern") or {}), target.removesuffix(".weight"))
        alpha_key = get_pattern_key(list(adapter_config.get("alpha_pattern") or {}), target.removesuffix(".weight"))
        r = (adapter_config.get("rank_pattern") or {}).get(r_key, adapter_config["r"])
        alpha = (adapter_config.get("alpha_pattern") or {}).get(alpha_key, adapter_config["lora_alpha"])
        a_key, b_key = keys.get(f"{module}.lora_A.weight"), keys.get(f"{module}.lora_B.weight")
        if a_key is None or b_key is None:
            raise UserError(f"the adapter has no lora_A / lora_B pair for {target}; the adapter file is incomplete.")
        used.update((a_key, b_key))
        scaling = alpha / math.sqrt(r) if adapter_config.get("use_rslora") else alpha / r
        a, b = adapter[a_key].to(torch.float32), adapter[b_key].to(torch.float32)
        return _Delta(target, a, b, r, scaling, experts, bool(adapter_config.get("fan_in_fan_out")) and not experts)

    shapes = {t.name: t.shape for t in plan}
    deltas = {}
    for module, params in _parameter_targets(adapter_config, config).items():
        for depth, param in enumerate(reversed(params)):  # the last one wrapped is the outermost
            target = f"{module}.{param}"
            # A 3-D stack is [E, in, out]; a 2-D parameter is a plain [out, in] weight, as PEFT treats it.
            experts = shapes[target][0] if len(shapes.get(target, ())) == 3 else 0
            deltas[target] = pair(f"{module}{'.base_layer' * depth}", target, experts)
    for key in sorted(keys):
        if key.endswith(".lora_A.weight") and keys[key] not in used:
            module = key.removesuffix(".lora_A.weight")
            deltas[f"{module}.weight"] = pair(module, f"{module}.weight", 0)
    left = sorted(k for k in adapter if k not in used)
    if left:
        raise UserError(f"the adapter holds {left[0]} ({len(left)} tensors in all) that merge-lora cannot merge.")
    for target in deltas:
        if target not in shapes:
            raise UserError(f"the adapter changes {target}, which the base model does not have. Is --base right?")
    for t in plan:  # in file order, so the first mismatch reported is the first in the model
        delta = deltas.get(t.name)
        if delta is not None and delta.fits() != t.shape:
            made = "A and B that do not fit each other" if delta.fits() is None else f"a delta of {list(delta.fits())}"
            raise UserError(
                f"the adapter does not fit the base model: {t.name} is {list(t.shape)} in the base, but the "
                f"adapter's lora_A {list(delta.a.shape)} and lora_B {list(delta.b.shape)} (r={delta.r}) make {made}. "
                "The adapter was trained on another model; pass that model with --base."
            )
    return deltas


def _parameter_targets(adapter_config: dict, config: dict) -> dict[str, list[str]]:
    """Module name -> its parameters that `target_parameters` wraps, in PEFT's wrapping order (innermost first)."""
    targets = sorted(set(adapter_config.get("target_parameters") or []))
    if not targets:
        return {}
    model = meta_model(config)
    found: dict[str, list[str]] = {}
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            key = f"{module_name}.{param_name}"
            if key in targets or any(key.endswith(f".{t}") for t in targets):
                found.setdefault(module_name, []).append(param_name)
    return found


def _shard_names(shards: list[list[_Tensor]]) -> dict[str, list[_Tensor]]:
    return dict(zip(shard_names(len(shards)), shards))


class _Reader:
    """Base tensors by name, each shard opened once (memory-mapped: only what is read is loaded)."""

    def __init__(self, headers: dict[str, tuple[Path, dict]]):
        self.headers, self.handles = headers, {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handles.clear()

    def get(self, name: str):
        from safetensors import safe_open

        file = self.headers[name][0]
        if file not in self.handles:
            self.handles[file] = safe_open(str(file), framework="pt")
        return self.handles[file].get_tensor(name)


def _build(t: _Tensor, reader: _Reader, delta: _Delta | None, dequantized: str):
    import torch

    if len(t.sources) == 2:  # MXFP4: dequantize (to float32 when a delta follows, so it is rounded once)
        blocks, scales = reader.get(t.sources[0]), reader.get(t.sources[1])
        dtype = getattr(torch, dequantized)
        weight = mxfp4.unpack(blocks, scales, dtype=torch.float32 if delta else dtype)
    else:
        weight = reader.get(t.sources[0])
        dtype = weight.dtype
    return delta.add_to(weight, dtype) if delta else weight.contiguous()


def _save(state: dict, path: Path) -> None:
    from safetensors.torch import save_file

    save_file(state, str(path), metadata={"format": "pt"})


def _write_config(config: dict, staging: Path, dtype: str) -> None:
    config = dict(config)
    if config.pop("quantization_config", None) is not None:
        config["dtype"] = dtype  # the experts' dtype now; a bf16 base's other tensors are bf16 already
        config.pop("torch_dtype", None)
    config["architectures"] = ["GptOssForCausalLM"]  # never an FSDP wrapper's name (docs/traps.md#trap-9)
    (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def _copy_side_files(adapter_dir: Path, base_dir: Path, staging: Path) -> None:
    """generation_config.json from the base; the tokenizer from the adapter folder when it has one (training
    may have added tokens or a chat template), else from the base. Never a mix of the two."""
    copy_generation_config([base_dir], staging)
    copy_tokenizer([adapter_dir, base_dir], staging)
