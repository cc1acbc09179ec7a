"""Proof that a model folder ossft wrote holds what was in memory, before any command reports success.

A dequantized gpt-oss saved naively reloads with random experts and only a warning (docs/traps.md#trap-1),
so every written model is read back: the tensor names must be exactly what the architecture expects
(no missing, no unexpected keys, as `from_pretrained` would see them), each tensor must equal the
one that was written (bytes compared through a digest, one tensor in memory at a time), and
config.json must name the plain architecture, never an `FSDP...` wrapper.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ossft.checkpoints.layout import ADAPTER_WEIGHTS, INDEX, SINGLE_FILE
from ossft.errors import UserError
from ossft.gptoss.facts import EXPERT_PARAMETERS, is_mxfp4


class VerificationError(RuntimeError):
    """What was written is not what was meant: a bug or a broken disk, never a user's mistake."""


def tensor_digest(tensor) -> str:
    import torch

    data = tensor.detach().to("cpu").contiguous()
    raw = data.view(torch.uint8) if data.dtype != torch.uint8 and data.numel() else data
    digest = hashlib.sha256(f"{data.dtype}|{tuple(data.shape)}|".encode())
    digest.update(raw.numpy())  # hashes the buffer in place: no copy of a multi-GB tensor
    return digest.hexdigest()


def trainable_digest(model) -> str:
    """One sha256 over every trainable parameter, in the model's order: equal on two processes
    exactly when their trained weights are bitwise equal."""
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            digest.update(f"{name}|{tensor_digest(parameter)}|".encode())
    return digest.hexdigest()


def digests(state: Mapping[str, object]) -> dict[str, str]:
    return {name: tensor_digest(tensor) for name, tensor in state.items()}


def shard_files(folder: Path) -> list[Path]:
    index = folder / INDEX
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / name for name in names]
    single = folder / SINGLE_FILE
    if single.is_file():
        return [single]
    raise UserError(f"{folder} holds no safetensors weights (model.safetensors or an index); is it a model folder?")


def saved_tensors(folder: Path) -> Iterator[tuple[str, object]]:
    """Every tensor of a saved model, one at a time. The file is opened anew for each: safe_open maps the
    whole file, and every page read stays resident until it is closed, so one handle per file would hold a
    5 GB shard in memory by its end (a read-back must not cost more than the write it checks)."""
    from safetensors import safe_open

    for file in shard_files(folder):
        with safe_open(str(file), framework="pt") as handle:
            names = list(handle.keys())
        for name in names:
            with safe_open(str(file), framework="pt") as handle:
                tensor = handle.get_tensor(name)
            yield name, tensor


def meta_model(config: dict):
    """The architecture `config` (config.json as a dict) describes, on the meta device: no memory.
    Experts appear as their plain parameters, as training had them, whatever the quantization."""
    import torch
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    plain = AutoConfig.for_model(**{k: v for k, v in config.items() if k != "quantization_config"})
    # The class itself, not AutoModelForCausalLM.from_config: under ZeRO-3 that one builds inside
    # deepspeed.zero.Init, a collective, and rank 0 verifying alone would wait there for the others.
    with torch.device("meta"):
        return MODEL_FOR_CAUSAL_LM_MAPPING[type(plain)](plain)


def expected_keys(folder: Path) -> set[str]:
    """The parameter names the architecture in config.json loads."""
    config = json.loads((folder / "config.json").read_text())
    model = meta_model(config)
    keys = set(model.state_dict())
    if getattr(model.config, "tie_word_embeddings", False):
        keys.discard("lm_head.weight")
    if is_mxfp4(config):
        packed = {k for k in keys if k.endswith(EXPERT_PARAMETERS)}
        keys = (keys - packed) | {f"{k}_{part}" for k in packed for part in ("blocks", "scales")}
    return keys


@dataclass
class Verified:
    folder: Path
    tensors: int
    architecture: str


def verify_model_folder(folder: str | Path, written: Mapping[str, str]) -> Verified:
    """Read `folder` back; `written` maps each tensor name to the digest of what was in memory."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    architectures = config.get("architectures") or []
    if any(a.startswith("FSDP") for a in architectures) or not architectures:
        raise VerificationError(f"{folder}/config.json names the architecture {architectures}, not GptOssForCausalLM")
    found = {}
    for name, tensor in saved_tensors(folder):
        found[name] = tensor_digest(tensor)
    _compare_keys(folder, set(found), expected_keys(folder), "the architecture expects")
    _compare_keys(folder, set(found), set(written), "ossft wrote")
    changed = sorted(name for name, digest in written.items() if found[name] != digest)
    if changed:
        raise VerificationError(f"{folder}: {len(changed)} tensors read back differ from memory, e.g. {changed[:3]}")
    return Verified(folder, len(found), architectures[0])


def _compare_keys(folder: Path, found: set[str], wanted: set[str], what: str) -> None:
    missing, unexpected = sorted(wanted - found), sorted(found - wanted)
    if missing or unexpected:
        raise VerificationError(
            f"{folder}: the saved tensors are not what {what}: missing {missing[:4]} ({len(missing)}), "
            f"unexpected {unexpected[:4]} ({len(unexpected)})"
        )


def verify_adapter_folder(folder: str | Path, written: Mapping[str, str]) -> Verified:
    """An adapter folder: adapter_model.safetensors holds exactly the LoRA tensors that were in memory."""
    from safetensors import safe_open

    folder = Path(folder)
    with safe_open(str(folder / ADAPTER_WEIGHTS), framework="pt") as handle:
        found = {name: tensor_digest(handle.get_tensor(name)) for name in handle.keys()}
    _compare_keys(folder, set(found), set(written), "ossft wrote")
    changed = sorted(name for name, digest in written.items() if found[name] != digest)
    if changed:
        raise VerificationError(
            f"{folder}: {len(changed)} adapter tensors read back differ from memory, e.g. {changed[:3]}"
        )
    return Verified(folder, len(found), "LoRA adapter")


def verify_trained_model(model, folder: str | Path, state_dict: Mapping | None = None) -> Verified:
    """Check what `Trainer.save_model` wrote for `model` (a PeftModel or a full model). `state_dict`:
    the whole weights the Trainer gathered for the save, where the model's own are sharded (ZeRO-3:
    rank 0 holds only its partition of each large tensor)."""
    from peft import PeftModel, get_peft_model_state_dict

    if isinstance(model, PeftModel):
        return verify_adapter_folder(folder, digests(get_peft_model_state_dict(model, state_dict=state_dict)))
    state = dict(state_dict if state_dict is not None else model.state_dict())
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    return verify_model_folder(folder, digests(state))
