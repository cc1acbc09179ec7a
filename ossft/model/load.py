"""Load gpt-oss and its tokenizer as the recipe says, and wrap it in LoRA (attention and experts).

Expert LoRA goes through PEFT's `target_parameters`: the experts are one module holding 3-D
parameters (`gate_up_proj` [E, H, 2I], `down_proj` [E, I, H]), not one Linear per expert, so
`target_modules` cannot reach them.
"""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path

from ossft.checkpoints.read import check_model_folder, read_json_object
from ossft.errors import UserError
from ossft.gptoss.facts import (
    ATTENTION_PROJECTIONS,
    DOCUMENT_AWARE_ATTENTIONS,
    EXPERT_PARAMETERS,
    FLEX_ATTENTION,
    is_mxfp4,
)
from ossft.model.documents import use_document_masks


def _from_pretrained(loader, name: str, **kwargs):
    """`loader.from_pretrained`, with "no such model" turned into a message that says what to do."""
    config = Path(name).expanduser() / "config.json"
    if config.is_file():
        read_json_object(config)  # damaged: named here, not as a JSONDecodeError inside transformers
    try:
        return loader.from_pretrained(name, **kwargs)
    except OSError as exc:
        if Path(name).expanduser().is_dir():
            raise  # the folder exists but is broken: let the real error show
        raise UserError(
            f"model.base_model: no model at '{name}': not a local folder, and not a Hub id available "
            f"offline. Give a folder with config.json, or, for the quickstart: ossft tiny-model {name}"
        ) from exc


def load_tokenizer(recipe):
    from transformers import AutoTokenizer

    source = recipe.model.tokenizer or recipe.model.base_model
    tokenizer = _from_pretrained(AutoTokenizer, source, trust_remote_code=recipe.model.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|endoftext|>"  # gpt-oss's own padding token
    return tokenizer


def load_model(recipe):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, Mxfp4Config

    name = recipe.model.base_model
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UserError(
                f"model.base_model: {name} is a folder without config.json, so not a model folder. "
                "Give the folder that holds the model's config.json and weights."
            )
        check_model_folder(folder)  # a truncated shard or a wrong index, named before loading
    config = _from_pretrained(AutoConfig, name, trust_remote_code=recipe.model.trust_remote_code)
    if config.model_type != "gpt_oss":
        raise UserError(f"model.base_model: {name} is a {config.model_type} model, not gpt-oss.")
    kwargs = {
        "dtype": "auto" if recipe.model.dtype == "auto" else getattr(torch, recipe.model.dtype),
        "attn_implementation": recipe.model.attn_implementation,
        "trust_remote_code": recipe.model.trust_remote_code,
    }
    if recipe.model.experts_implementation:
        kwargs["experts_implementation"] = recipe.model.experts_implementation
    if recipe.model.attn_implementation == FLEX_ATTENTION:
        from ossft.model.sink_attention import register

        register()  # before from_pretrained, which checks the name
    mxfp4 = is_mxfp4(config)
    if recipe.model.mxfp4_experts is True and not mxfp4:
        raise UserError(
            f"model.mxfp4_experts: {name} has no MXFP4 experts (no quantization_config with quant_method mxfp4 "
            "in its config.json). Set model.mxfp4_experts: false, or train from the released MXFP4 checkpoint."
        )
    if mxfp4:
        # Training needs real tensors: the FP4 expert weights become bf16 (or the recipe's dtype).
        kwargs["quantization_config"] = Mxfp4Config(dequantize=True)
    model = _from_pretrained(AutoModelForCausalLM, name, **kwargs)
    if mxfp4:
        forget_mxfp4_layout(model)
    model.config.use_cache = False  # the KV cache only costs memory while training
    if recipe.model.attn_implementation in DOCUMENT_AWARE_ATTENTIONS:
        use_document_masks(model)  # packed documents attend only within themselves (docs/traps.md#trap-2)
    return model


def forget_mxfp4_layout(model) -> None:
    """Make every later save write the dequantized experts under their plain names.

    transformers remembers how it turned `*_blocks`/`*_scales` into `gate_up_proj` and, on save,
    writes the bf16 tensors back under the `_blocks` names without `quantization_config`: the
    reload then initialises the experts at random, with a warning only (docs/traps.md#trap-1).
    """
    conversions = getattr(model, "_weight_conversions", None) or []
    model._weight_conversions = [
        c for c in conversions if not any("_blocks" in p for p in getattr(c, "source_patterns", []))
    ]
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False


def expert_targets(experts: str | list[int], num_layers: int) -> list[str]:
    """PEFT `target_parameters` for the recipe's `lora.experts`."""
    if experts == "none":
        return []
    if experts == "all":
        return list(EXPERT_PARAMETERS)
    wrong = [i for i in experts if i >= num_layers]
    if wrong:
        raise UserError(f"lora.experts: layer {wrong[0]} does not exist; this model has layers 0..{num_layers - 1}.")
    # "layers.7." cannot match layers.17 or layers.27: PEFT matches whole dotted name suffixes.
    return [f"layers.{i}.{name}" for i in experts for name in EXPERT_PARAMETERS]


def lora_config(recipe, num_layers: int):
    from peft import LoraConfig

    lora = recipe.lora
    targets = expert_targets(lora.experts, num_layers)
    # PEFT matches rank_pattern keys against target_parameters names too (and, as of 0.21, still
    # warns that they matched nothing: the ranks are applied all the same, tests/test_model.py).
    ranks = {name: lora.experts_r for name in EXPERT_PARAMETERS} if targets and lora.experts_r else {}
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules=list(lora.target_modules),
        target_parameters=targets or None,
        rank_pattern=ranks,
        task_type="CAUSAL_LM",
    )


def check_target_modules(model, names: list[str]) -> None:
    # PEFT raises on an unmatched target_modules entry only when nothing else matched; with expert
    # target_parameters set it merely warns, and a typo would silently train the experts alone.
    module_names = [name for name, _ in model.named_modules()]
    leaves = sorted({name.rsplit(".", 1)[-1] for name in module_names})
    for wanted in names:
        if not any(name == wanted or name.endswith("." + wanted) for name in module_names):
            close = difflib.get_close_matches(wanted, leaves, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UserError(
                f"lora.target_modules: '{wanted}' matches no module of this model.{hint} "
                f"gpt-oss's attention projections are {', '.join(ATTENTION_PROJECTIONS)}."
            )


def apply_lora(model, recipe):
    from peft import get_peft_model

    if recipe.lora is None:
        return model
    check_target_modules(model, recipe.lora.target_modules)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The following (rank|alpha)_pattern keys did not match")
        model = get_peft_model(model, lora_config(recipe, model.config.num_hidden_layers))
    if recipe.lora.experts_delta == "routed":
        from ossft.model.expert_lora import use_routed_expert_lora

        use_routed_expert_lora(model)
    return model


def keep_frozen_experts_in_mxfp4(model, recipe):
    """After LoRA is in place (PEFT sizes its expert factors from the bf16 weights): the frozen expert
    weights back to MXFP4, when the recipe asks."""
    if not recipe.experts_in_mxfp4():
        return model
    from ossft.model.mxfp4_experts import keep_experts_in_mxfp4

    keep_experts_in_mxfp4(model)
    return model


def parameter_size(parameter) -> int:
    """Elements of a parameter. Under ZeRO-3 each rank holds a slice and numel() is 0; ds_numel is the whole."""
    return getattr(parameter, "ds_numel", None) or parameter.numel()


def parameter_counts(model) -> tuple[int, int]:
    trainable = sum(parameter_size(p) for p in model.parameters() if p.requires_grad)
    total = sum(parameter_size(p) for p in model.parameters())
    return trainable, total
