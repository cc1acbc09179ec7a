"""`ossft merge-shards RUN_OR_CHECKPOINT [--out DIR]`: an FSDP2 sharded save as a Hugging Face folder.

An FSDP2 run saved with SHARDED_STATE_DICT leaves one `.distcp` file per rank and no config, tokenizer or
adapter config (see ossft/checkpoints/dcp.py for the exact layout). This writes what `from_pretrained` loads:
- a full fine-tune: sharded safetensors + index, config.json naming the plain architecture (never an `FSDP...`
  wrapper, docs/traps.md#trap-9, nor the MXFP4 `quantization_config` of a base whose experts training dequantized),
  generation_config.json and the tokenizer;
- a LoRA run: `adapter_model.safetensors` with exactly the names PEFT's `save_pretrained` writes, and
  `adapter_config.json` (found beside the save, or rebuilt from the run's recipe.yaml the way training built it).
Config, tokenizer and generation config come from the save's folder, then the run folder, then the base model
(`--base`, or the recipe's `model.base_model`).

Streamed, unlike `accelerate merge-weights` or `dcp_to_torch_save`, which load the whole model (docs/traps.md#trap-8):
the names, shapes and dtypes come from DCP's `.metadata` alone, are checked against the architecture, and then
each output file is written header first (ossft/checkpoints/safetensors_writer.py) and filled batch by batch, each batch
one `dcp.load` of just its keys, the next batch read while this one is written. Peak memory: two batches
(READ_BATCH, 128 MiB; a bigger tensor alone) plus one rank's chunk of a tensor, whatever the output shard size
(`max_shard_size`, 5 GiB by default). Everything is written into a temporary folder beside `out_dir`, read back and checked, and
only then renamed, so a crash never leaves a half-merged folder that looks complete.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ossft.checkpoints.dcp import (
    TensorInfo,
    find_sharded_save,
    load_tensors,
    read_model_tensors,
    run_folder,
)
from ossft.checkpoints.disk_space import ensure_room
from ossft.checkpoints.dtypes import float_dtype
from ossft.checkpoints.layout import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    DEFAULT_MAX_SHARD_SIZE,
    FSDP_MODEL_FOLDER,
    RECIPE_COPY,
    copy_generation_config,
    copy_tokenizer,
    group_into_shards,
    require_empty_output,
    shard_names,
    write_index,
)
from ossft.checkpoints.read import local_model_folder, read_json_object
from ossft.checkpoints.safetensors_writer import StreamedSafetensorsWriter
from ossft.checkpoints.verify import meta_model, tensor_digest, verify_adapter_folder, verify_model_folder
from ossft.errors import UserError
from ossft.files import staged_folder

# Tensors read per dcp.load. Two batches are in memory at once (one written, the next read): that is the
# peak of a merge, whatever the output shard size. Larger batches gain little (one load's planning costs a
# few ms); smaller ones add a load per few tensors.
READ_BATCH = 128 * 2**20

# A full model is written in bf16, what gpt-oss is served in, unless asked otherwise: FSDP2 with mixed
# precision trains, and so saves, fp32 master weights (docs/stack.md, accelerate), twice the bytes. An adapter
# keeps the dtype it was saved in, as PEFT's own save_pretrained does (fp32 adapters are PEFT's default).
SERVED_DTYPE = "bf16"
KEEP_SAVED_DTYPE = "saved"


@dataclass
class MergeShardsReport:
    out_dir: Path
    source: Path  # the folder whose pytorch_model_fsdp_0/ was read: the run's final save, or a checkpoint-N
    adapter: bool  # a LoRA adapter (True) or a full model
    tensors: int
    shards: int
    bytes: int  # tensor data written
    dtype: str  # config.json's dtype: the one asked for, or the one most bytes were saved in
    saved_dtype: str  # the one most bytes of the save are in (fp32 after FSDP2 mixed precision)
    tokenizer_from: Path | None  # where the tokenizer files were copied from; None when none was found
    seconds: float


@dataclass(frozen=True)
class _Tensor:
    """One output tensor: its name in the Hugging Face folder, its key in the save, what it becomes."""

    name: str
    key: str
    shape: tuple[int, ...]
    dtype: object  # torch.dtype as written

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass
class _Run:
    """Where the save is and where its side files can come from, first match wins."""

    save: Path
    run_dir: Path
    recipe: dict | None  # the run's recipe.yaml as plain data, when there is one
    base_name: str | None  # --base, or the recipe's model.base_model
    base_dir: Path | None

    def folders(self) -> list[Path]:
        return list(dict.fromkeys(p for p in (self.save, self.run_dir, self.base_dir) if p is not None))

    def tokenizer_folders(self) -> list[Path]:
        tokenizer = ((self.recipe or {}).get("model") or {}).get("tokenizer")
        chosen = local_model_folder(tokenizer) if tokenizer else None
        return list(dict.fromkeys(p for p in (self.save, self.run_dir, chosen, self.base_dir) if p is not None))


def merge_shards(
    source: str | Path,
    out_dir: str | Path | None = None,
    base: str | None = None,
    dtype: str | None = None,
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
    on_progress: Callable[[int, int], None] | None = None,
) -> MergeShardsReport:
    """Write the final save in `source` (a run's output folder), else its newest checkpoint-N (or `source` itself
    when it is one), as a Hugging Face model or adapter folder in `out_dir` (default: `merged` beside the save).

    `dtype` (bf16, fp16, fp32) casts every tensor, "saved" keeps each as saved; by default a full model is
    cast to SERVED_DTYPE and an adapter keeps its saved dtype. `base`
    overrides the base model named in the run's recipe.yaml. `on_progress(done_bytes, total_bytes)` follows the
    tensor bytes read. Raises UserError, before anything is written, for whatever the user can fix.
    """
    start = time.perf_counter()
    save = find_sharded_save(Path(source))
    tensors = read_model_tensors(save / FSDP_MODEL_FOLDER)
    out_dir = Path(out_dir) if out_dir is not None else save / "merged"
    require_empty_output(out_dir)
    if max_shard_size <= 0:
        raise UserError(f"--max-shard-size must be a positive number of bytes, got {max_shard_size}.")
    run = _gather_run(save, base)
    config, config_from = _base_config(run)
    adapter = any(".lora_A." in key for key in tensors)
    cast = _output_dtype(dtype, adapter)
    saved_dtype = _main_dtype([_Tensor(name, name, info.shape, info.dtype) for name, info in tensors.items()])
    if adapter:
        lora = _lora_config(run, config)
        plan = _adapter_plan(tensors, config, lora, cast, config_from)
        files = {ADAPTER_WEIGHTS: plan}  # PEFT reads one adapter file: never split, whatever its size
    else:
        plan = _model_plan(tensors, config, cast)
        shards = group_into_shards(plan, max_shard_size)
        files = dict(zip(shard_names(len(shards)), shards))
    total = sum(t.nbytes for t in plan)
    ensure_room(out_dir, total, "the LoRA adapter" if adapter else "the merged model")
    dtype_name = _main_dtype(plan)

    # The architecture check imports transformers' model code (~2 s), so it runs beside the writes, which
    # stop at the next batch if it fails; the staging folder then goes, and nothing is left behind.
    with ThreadPoolExecutor(max_workers=1) as checker, staged_folder(out_dir) as staging:
        check = None if adapter else checker.submit(_check_architecture, plan, config, config_from)
        written = _write_files(save / FSDP_MODEL_FOLDER, staging, files, total, on_progress, failed=check)
        tokenizer_from = copy_tokenizer(run.tokenizer_folders(), staging)
        if adapter:
            _write_adapter_config(lora, staging)
            verify_adapter_folder(staging, written)
        else:
            write_index(staging, {t.name: file for file, ts in files.items() for t in ts}, total)
            _write_model_config(config, check.result(), dtype_name, staging)
            copy_generation_config(run.folders(), staging)
            verify_model_folder(staging, written)
    seconds = time.perf_counter() - start
    return MergeShardsReport(
        out_dir, save, adapter, len(plan), len(files), total, dtype_name, saved_dtype, tokenizer_from, seconds
    )


def _output_dtype(dtype: str | None, adapter: bool):
    """The torch dtype every tensor is cast to, or None to keep each as saved."""
    if dtype == KEEP_SAVED_DTYPE or (dtype is None and adapter):
        return None
    return float_dtype(SERVED_DTYPE if dtype is None else dtype)


def parse_size(text: str) -> int:
    """'5GB' (10^9), '5GiB' (2^30), '500MB', '1000000' -> bytes, as Hugging Face's max_shard_size reads them."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(([KMGT])(i?)B)?\s*", text, flags=re.IGNORECASE)
    if not match:
        raise UserError(f"--max-shard-size {text}: expected a size such as 5GB, 2GiB, 500MB or a number of bytes.")
    number, unit, prefix, binary = match[1], match[2], (match[3] or "").upper(), match[4]
    power = "KMGT".index(prefix) + 1 if unit else 0
    return int(float(number) * (1024 if binary else 1000) ** power)


def _gather_run(save: Path, base: str | None) -> _Run:
    run_dir = run_folder(save)
    recipe = _recipe_data(run_dir / RECIPE_COPY) if (run_dir / RECIPE_COPY).is_file() else None
    base_name = base if base is not None else ((recipe or {}).get("model") or {}).get("base_model")
    base_dir = local_model_folder(base_name) if base_name else None
    if base is not None and (base_dir is None or not (base_dir / "config.json").is_file()):
        raise UserError(f"--base {base}: no model folder with a config.json there, nor a Hub id in the local cache.")
    return _Run(save, run_dir, recipe, base_name, base_dir)


def _recipe_data(path: Path) -> dict | None:
    """The recipe copy as plain YAML: validating it would import TRL (seconds) for two of its keys;
    it is validated only when the adapter's settings must be rebuilt from it (_lora_config)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path}: not readable YAML ({exc}). Repair it, or pass the base model with --base PATH."
        ) from exc
    return data if isinstance(data, dict) else None


def _base_config(run: _Run) -> tuple[dict, Path]:
    for folder in run.folders():
        if (folder / "config.json").is_file():
            fix = "Repair or replace it, or pass the base model the run trained with --base PATH."
            return read_json_object(folder / "config.json", fix), folder
    if run.base_name and run.base_dir is None:
        why = f"the run's base model '{run.base_name}' (recipe.yaml's model.base_model) is not here"
    elif run.recipe is None:
        why = f"{run.run_dir} has no {RECIPE_COPY} naming the base model"
    else:
        why = f"the base model {run.base_dir} has no config.json"
    raise UserError(
        f"no config.json for {run.save}: FSDP sharded saves hold none, and {why}. Pass the base model the run "
        "trained with --base PATH."
    )


def _model_plan(tensors: dict[str, TensorInfo], config: dict, cast) -> list[_Tensor]:
    saved = dict(tensors)
    if config.get("tie_word_embeddings"):  # one tensor under two names; Hugging Face files hold the embedding
        saved.pop("lm_head.weight", None)
    return [_Tensor(name, name, info.shape, cast or info.dtype) for name, info in saved.items()]


def _check_architecture(plan: list[_Tensor], config: dict, config_from: Path) -> str:
    """The planned tensors against the architecture of `config` (names and shapes); its class name."""
    model = meta_model(config)
    wanted = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if config.get("tie_word_embeddings"):
        wanted.pop("lm_head.weight", None)
    _compare({t.name: t for t in plan}, wanted, config_from)
    return type(model).__name__


def _lora_config(run: _Run, config: dict):
    from peft import LoraConfig

    for folder in (run.save, run.run_dir):
        if (folder / ADAPTER_CONFIG).is_file():
            return LoraConfig.from_pretrained(str(folder))
    if run.recipe is None or not run.recipe.get("lora"):
        what = f"no {RECIPE_COPY}" if run.recipe is None else f"a {RECIPE_COPY} with no lora: section"
        raise UserError(
            f"{run.save / FSDP_MODEL_FOLDER} holds LoRA tensors, but there is no {ADAPTER_CONFIG} beside it and "
            f"{run.run_dir} has {what}, so the adapter's settings are unknown. Put the run's {ADAPTER_CONFIG} "
            f"(or its recipe.yaml) in {run.run_dir}."
        )
    from ossft.model.load import lora_config
    from ossft.recipe.load import load_recipe

    recipe = load_recipe(run.run_dir / RECIPE_COPY)
    lora = lora_config(recipe, config["num_hidden_layers"])  # exactly what training wrapped the model with
    lora.base_model_name_or_path = run.base_name
    return lora


def _adapter_plan(tensors: dict[str, TensorInfo], config: dict, lora, cast, config_from: Path) -> list[_Tensor]:
    """PEFT's own names for the saved LoRA tensors: the Trainer saves them so already; a whole-model save
    (`accelerator.save_state`) holds `...lora_A.default.weight` beside the frozen base, which PEFT filters."""
    import copy

    import torch
    from peft import get_peft_model, get_peft_model_state_dict

    lora = copy.deepcopy(lora)
    lora.base_model_name_or_path = None  # the meta model has no path: PEFT would warn that it "renamed" it
    with warnings.catch_warnings(), torch.device("meta"):
        # As in ossft/model/load.py: peft 0.21 warns that rank_pattern keys for target_parameters match nothing, and
        # applies them all the same; and it still asks transformers for a deprecated property.
        warnings.filterwarnings("ignore", message="The following (rank|alpha)_pattern keys did not match")
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
        model = get_peft_model(meta_model(config), lora)
    wanted = {name: tuple(t.shape) for name, t in get_peft_model_state_dict(model).items()}
    placeholders = {key: torch.empty(info.shape, dtype=info.dtype, device="meta") for key, info in tensors.items()}
    keys = {id(t): key for key, t in placeholders.items()}
    named = {name: keys[id(t)] for name, t in get_peft_model_state_dict(model, state_dict=placeholders).items()}
    _compare({name: tensors[key] for name, key in named.items()}, wanted, config_from)
    return [_Tensor(name, key, tensors[key].shape, cast or tensors[key].dtype) for name, key in named.items()]


def _compare(saved: dict[str, TensorInfo | _Tensor], wanted: dict[str, tuple], config_from: Path) -> None:
    missing, unexpected = sorted(set(wanted) - set(saved)), sorted(set(saved) - set(wanted))
    wrong = [name for name in wanted if name in saved and tuple(saved[name].shape) != wanted[name]]
    if not (missing or unexpected or wrong):
        return
    if wrong:
        name = wrong[0]
        what = f"{name} is {list(saved[name].shape)} in the save but {list(wanted[name])} in the architecture"
    else:
        what = f"missing {missing[:3]} ({len(missing)}), unexpected {unexpected[:3]} ({len(unexpected)})"
    raise UserError(
        f"the save does not match the model in {config_from}/config.json: {what}. It was trained from another "
        "model; pass that one with --base PATH."
    )


def _main_dtype(plan: list[_Tensor]) -> str:
    by_bytes = Counter()
    for t in plan:
        by_bytes[str(t.dtype).removeprefix("torch.")] += t.nbytes
    return by_bytes.most_common(1)[0][0]


def _write_files(
    dcp_dir: Path, staging: Path, files: dict[str, list[_Tensor]], total: int, on_progress, failed: Future | None = None
) -> dict:
    """Each output file header first, then its tensors batch by batch: one `dcp.load` per batch of at most
    READ_BATCH bytes (a bigger tensor alone), straight into tensors of the output dtype. Three things overlap,
    since file reads, file writes and hashlib all release the GIL: the next batch is read on one thread
    while this one is written, and each tensor's digest is taken on another. Before each batch, the error
    of the `failed` future, once it has one, is raised."""
    import torch

    written, done = {}, 0

    def advance(nbytes: int) -> None:
        nonlocal done
        done += nbytes
        if on_progress:
            on_progress(min(done, total), total)

    def load(batch: list[_Tensor]) -> dict:
        targets = {t.key: torch.empty(t.shape, dtype=t.dtype) for t in batch}
        load_tensors(dcp_dir, targets, advance)
        return targets

    batches = {file: group_into_shards(plan, READ_BATCH) for file, plan in files.items()}
    reads = _read_ahead([batch for file_batches in batches.values() for batch in file_batches], load)
    # closing(): on an error the read in flight is waited for, so no thread reads on after this returns.
    with ThreadPoolExecutor(max_workers=1) as hasher, contextlib.closing(reads) as loaded:
        for file, plan in files.items():
            specs = [(t.name, t.shape, t.dtype) for t in plan]
            with StreamedSafetensorsWriter(staging / file, specs, {"format": "pt"}) as writer:
                for batch in batches[file]:
                    if failed is not None and failed.done() and failed.exception() is not None:
                        raise failed.exception()
                    targets = next(loaded)
                    digests = {t.name: hasher.submit(tensor_digest, targets[t.key]) for t in batch}
                    for t in batch:
                        writer.write(t.name, targets[t.key])
                    written.update((name, digest.result()) for name, digest in digests.items())
                    del targets
    if on_progress:
        on_progress(total, total)
    return written


def _read_ahead(items: list, load: Callable) -> Iterator:
    """`load(item)` for each item in order, the next one loading on a second thread while the caller works."""
    with ThreadPoolExecutor(max_workers=1) as reader:
        future = reader.submit(load, items[0]) if items else None
        for i in range(len(items)):
            result = future.result()
            future = reader.submit(load, items[i + 1]) if i + 1 < len(items) else None
            yield result
            del result


def _write_model_config(config: dict, architecture: str, dtype: str, staging: Path) -> None:
    from ossft.files import write_json_atomic

    config = {k: v for k, v in config.items() if k not in ("quantization_config", "torch_dtype")}
    config["architectures"] = [architecture]  # the class itself: never FSDPGptOssForCausalLM (docs/traps.md#trap-9)
    config["dtype"] = dtype
    write_json_atomic(staging / "config.json", config)


def _write_adapter_config(lora, staging: Path) -> None:
    lora.inference_mode = True  # as PeftModel.save_pretrained writes it
    lora.save_pretrained(str(staging))


