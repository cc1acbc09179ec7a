"""`ossft export MODEL_DIR --mxfp4 --out DIR`: a merged or fully fine-tuned gpt-oss back to the MXFP4 layout.

The released gpt-oss checkpoints store each expert weight as `..._blocks` / `..._scales` (see ossft/mxfp4.py)
and every other tensor in bf16; vLLM and transformers serve that layout natively. Export turns a bf16 / fp32
gpt-oss folder (plain `mlp.experts.gate_up_proj` [E, H, 2I] and `down_proj` [E, I, H]) into it:

- streamed: the shard plan is made from the safetensors headers alone, then tensors are read one at a time
  with `safe_open` and written one output shard at a time, so memory stays near one output shard plus the
  tensor in hand (`max_shard_size`, 5 GiB by default, like the released checkpoints);
- expert weights are packed with `mxfp4.pack`; their relative RMS error (what `mxfp4.quantize_error` gives)
  is measured on the bytes actually written and returned per tensor; every other tensor (attention, router,
  embeddings, norms, expert biases) is copied unchanged, in its own dtype;
- config.json gets the released checkpoints' `quantization_config` and dtype; generation config and tokenizer
  files are copied;
- everything is written into a temporary folder beside `out_dir`, read back and checked tensor by tensor
  against what was meant (`verify_model_folder`), and only then renamed to `out_dir`: a failure or a crash
  leaves no half-made model behind.

Sizes here (`bytes_in`, `bytes_out`) are tensor data bytes, safetensors headers not counted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ossft.checkpoints.disk_space import ensure_room
from ossft.checkpoints.layout import (
    DEFAULT_MAX_SHARD_SIZE,
    GENERATION_CONFIG,
    INDEX,
    SINGLE_FILE,
    TOKENIZER_FILES,
    copy_generation_config,
    copy_tokenizer,
    require_empty_output,
    shard_names,
    write_index,
)
from ossft.checkpoints.read import model_weights, read_json_object, refuse_sharded_save
from ossft.errors import UserError
from ossft.files import staged_folder
from ossft.gptoss import mxfp4
from ossft.gptoss.facts import EXPERT_PARAMETERS, is_mxfp4

FLOAT_DTYPES = ("F64", "F32", "BF16", "F16")


@dataclass
class ExportReport:
    out_dir: Path
    shards: list[str]  # file names in out_dir, in order
    tensors: int  # tensors written
    errors: dict[str, float]  # expert parameter name -> relative RMS error of its MXFP4 form
    bytes_in: int  # tensor data read
    bytes_out: int  # tensor data written
    seconds: float
    copied: list[str] = field(default_factory=list)  # tokenizer / generation files copied beside the weights


@dataclass(frozen=True)
class _Source:
    """One input tensor as its shard's header describes it, and where it goes."""

    name: str
    file: Path
    dtype: str  # safetensors spelling: BF16, F32, ...
    shape: tuple[int, ...]
    nbytes: int
    expert: bool
    bytes_out: int
    shard: int = 0


def export_mxfp4(
    model_dir: str | Path,
    out_dir: str | Path,
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
    on_progress: Callable[[int, int], None] | None = None,
) -> ExportReport:
    """Write `model_dir` (a gpt-oss in bf16 / fp32) to `out_dir` with MXFP4 experts, as the released checkpoints.

    `on_progress(done_bytes, total_bytes)` is called after each input tensor (bytes of input tensor data).
    Raises UserError for anything the user can fix; nothing is printed.
    """
    from safetensors import safe_open

    from ossft.checkpoints.verify import tensor_digest, verify_model_folder

    start = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if max_shard_size <= 0:
        raise UserError(f"the maximum shard size must be a positive number of bytes, got {max_shard_size}.")
    config = _check_model_folder(model_dir)
    require_empty_output(out_dir)
    sources = _plan(model_dir, max_shard_size)
    bytes_in = sum(s.nbytes for s in sources)
    bytes_out = sum(s.bytes_out for s in sources)
    ensure_room(out_dir, bytes_out, "the MXFP4 model")

    n_shards = sources[-1].shard + 1
    names = shard_names(n_shards)
    with staged_folder(out_dir) as staging:
        written: dict[str, str] = {}
        weight_map: dict[str, str] = {}
        errors: dict[str, float] = {}
        done = 0
        buffer: dict[str, object] = {}
        shard = 0
        for file, group in _by_file(sources):
            with safe_open(str(file), framework="pt") as handle:
                for source in group:
                    if source.shard != shard:
                        _write_shard(staging / names[shard], buffer)
                        buffer, shard = {}, source.shard
                    tensor = handle.get_tensor(source.name)
                    if source.expert:
                        blocks, scales = mxfp4.pack(tensor)
                        errors[source.name] = _relative_rms(tensor, blocks, scales)
                        outputs = {f"{source.name}_blocks": blocks, f"{source.name}_scales": scales}
                    else:
                        outputs = {source.name: tensor}
                    del tensor
                    for name, value in outputs.items():
                        buffer[name] = value
                        written[name] = tensor_digest(value)
                        weight_map[name] = names[shard]
                    done += source.nbytes
                    if on_progress is not None:
                        on_progress(done, bytes_in)
        _write_shard(staging / names[shard], buffer)
        del buffer
        write_index(staging, weight_map, bytes_out)
        (staging / "config.json").write_text(json.dumps(_mxfp4_config(config), indent=2) + "\n")
        copied = [GENERATION_CONFIG] if copy_generation_config([model_dir], staging) else []
        if copy_tokenizer([model_dir], staging):
            copied += [name for name in TOKENIZER_FILES if (staging / name).is_file()]
        verify_model_folder(staging, written)
        _usual_permissions(staging)
    return ExportReport(
        out_dir=out_dir,
        shards=names,
        tensors=len(written),
        errors=errors,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        seconds=time.perf_counter() - start,
        copied=copied,
    )


def _check_model_folder(model_dir: Path) -> dict:
    """config.json of a plain (unquantized) gpt-oss folder with safetensors weights, or a UserError saying why not."""
    if not model_dir.exists():
        raise UserError(f"model folder not found: {model_dir}. Pass the folder of a merged or fully fine-tuned model.")
    if not model_dir.is_dir():
        raise UserError(f"{model_dir} is a file, not a model folder. Pass the folder that holds config.json.")
    refuse_sharded_save(model_dir)
    if (model_dir / "adapter_config.json").is_file():
        raise UserError(
            f"{model_dir} is a LoRA adapter, not a full model. Merge it first with "
            f"`ossft merge-lora {model_dir} --out MERGED_DIR`, then export MERGED_DIR."
        )
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{model_dir} holds no config.json, so it is not a model folder. Pass a gpt-oss model folder.")
    config = read_json_object(config_path)
    if config.get("model_type") != "gpt_oss":
        kind = config.get("model_type")
        raise UserError(
            f"{model_dir} holds a {kind or 'unknown'} model, not gpt-oss; MXFP4 export is for gpt-oss only."
        )
    if is_mxfp4(config):
        raise UserError(
            f"{model_dir} is already MXFP4 (quantization_config says so); there is nothing to export. "
            "Pass a bf16 or fp32 model folder."
        )
    quantization = config.get("quantization_config")
    method = quantization.get("quant_method") if isinstance(quantization, dict) else None
    if method:
        raise UserError(
            f"{model_dir} is quantized with {method}; MXFP4 export needs bf16 or fp32 weights. "
            "Export the unquantized model instead."
        )
    _input_files(model_dir)  # weights present
    return config


def _input_files(model_dir: Path) -> None:
    """Weights are there (their files are checked whole by `model_weights`, in `_plan`)."""
    if (model_dir / INDEX).is_file() or (model_dir / SINGLE_FILE).is_file():
        return
    raise UserError(
        f"{model_dir} holds no safetensors weights ({SINGLE_FILE} or {INDEX}), so it is "
        "not a model folder ossft can export. Save the model with safetensors (the default of save_pretrained)."
    )


def _plan(model_dir: Path, max_shard_size: int) -> list[_Source]:
    """Every input tensor in reading order, with its output size and output shard.

    Greedy like `save_pretrained`: a shard closes when the next tensor would take it past `max_shard_size`; a
    tensor larger than that gets a shard of its own. An expert's blocks and scales always share a shard.
    """
    sources: list[_Source] = []
    seen: dict[str, Path] = {}
    # Every weight file checked whole and against the index before anything is written.
    for file, header in sorted(model_weights(model_dir).items()):
        for name, info in header.items():
            dtype, shape = info["dtype"], tuple(info["shape"])
            nbytes = info["data_offsets"][1] - info["data_offsets"][0]
            if name.endswith(("_blocks", "_scales")) and ".mlp.experts." in name:
                raise UserError(
                    f"{model_dir} already holds MXFP4-style expert tensors ({name}); there is nothing to export. "
                    "If this folder came from saving a dequantized model (its experts may be bf16 under *_blocks "
                    "names), reload the original MXFP4 checkpoint instead."
                )
            expert = name.endswith(EXPERT_PARAMETERS)
            if expert:
                bytes_out = _expert_bytes_out(model_dir, name, dtype, shape)
            else:
                bytes_out = nbytes
            if name in seen:
                raise UserError(
                    f"{model_dir}: tensor {name} is in both {seen[name].name} and {file.name}. "
                    "The checkpoint is inconsistent; save the model again."
                )
            seen[name] = file
            sources.append(_Source(name, file, dtype, shape, nbytes, expert, bytes_out))
    if not sources:
        raise UserError(f"{model_dir} holds no tensors. Is the model folder complete?")
    if not any(s.expert for s in sources):
        raise UserError(
            f"{model_dir} holds no expert weights (*.mlp.experts.gate_up_proj / down_proj); is it a gpt-oss "
            "saved by transformers?"
        )
    planned, shard, size = [], 0, 0
    for source in sources:
        if size and size + source.bytes_out > max_shard_size:
            shard, size = shard + 1, 0
        size += source.bytes_out
        planned.append(replace(source, shard=shard))
    return planned


def _expert_bytes_out(model_dir: Path, name: str, dtype: str, shape: tuple[int, ...]) -> int:
    if dtype not in FLOAT_DTYPES or len(shape) != 3:
        raise UserError(
            f"{model_dir}: expert weight {name} is {dtype} of shape {list(shape)}, not a float [experts, in, out] "
            "tensor. Export needs a bf16 or fp32 gpt-oss saved by transformers."
        )
    experts, n_in, n_out = shape
    if n_in % mxfp4.BLOCK:
        raise UserError(
            f"{model_dir}: expert weight {name} has input dimension {n_in}, not a multiple of {mxfp4.BLOCK}, "
            "so it cannot be stored as MXFP4."
        )
    groups = n_in // mxfp4.BLOCK
    return experts * n_out * groups * (mxfp4.BLOCK // 2 + 1)  # 16 bytes of codes + 1 scale byte per block


def _by_file(sources: list[_Source]):
    group: list[_Source] = []
    for source in sources:
        if group and source.file != group[0].file:
            yield group[0].file, group
            group = []
        group.append(source)
    if group:
        yield group[0].file, group


def _relative_rms(weight, blocks, scales) -> float:
    """||unpack(blocks, scales) - w|| / ||w||, computed as `mxfp4.quantize_error` does (same value, bit for bit),
    from the bytes already packed instead of packing again."""
    import torch

    err = norm = 0.0
    for e in range(weight.shape[0]):
        w = weight[e].detach().to(torch.float64)
        # float32 holds every MXFP4 value exactly, and unpacking to it is faster than to float64: same q.
        q = mxfp4.unpack(blocks[e : e + 1], scales[e : e + 1], dtype=torch.float32)[0].to(torch.float64)
        err += float(((q - w) ** 2).sum())
        norm += float((w**2).sum())
    return (err / norm) ** 0.5 if norm else 0.0


def _write_shard(path: Path, tensors: dict) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})


def _usual_permissions(folder: Path) -> None:
    """mkdtemp makes a private (0700) folder and safetensors writes 0600 files; give the finished model the
    permissions a plainly created file gets here (config.json was written with open(), so it has them)."""
    mode = (folder / "config.json").stat().st_mode & 0o666
    for path in folder.iterdir():
        path.chmod(mode)
    folder.chmod(mode | (mode & 0o444) >> 2)  # x wherever r


def _mxfp4_config(config: dict) -> dict:
    out = dict(config)
    out["architectures"] = ["GptOssForCausalLM"]
    out["quantization_config"] = json.loads(json.dumps(mxfp4.QUANTIZATION_CONFIG))
    # The released checkpoints say bfloat16: servers run the model in it (a float32 input's non-expert tensors stay
    # float32 on disk and are cast on load). Both spellings, for older and newer transformers.
    out["dtype"] = out["torch_dtype"] = "bfloat16"
    return out
