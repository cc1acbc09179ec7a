"""Ask a model something: harmony prompt -> greedy generation -> its analysis and final channels.

Works on a base or merged model folder (MXFP4 or not) and on a LoRA adapter folder, whose base is
found in adapter_config.json. Generation stops where a served gpt-oss stops: `<|return|>` or `<|call|>`.
"""

from __future__ import annotations

from pathlib import Path

from ossft.checkpoints.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, RECIPE_COPY
from ossft.checkpoints.read import check_model_folder, read_json_object, refuse_sharded_save, safetensors_header
from ossft.data.tokenizer import special_token_ids, text_encoder
from ossft.errors import UserError
from ossft.harmony import render as harmony

ADAPTER_FIX = "Copy the adapter folder again, or use one of the run's checkpoint-N folders."


def _load_model(folder: Path, dtype):
    from transformers import AutoConfig, AutoModelForCausalLM, Mxfp4Config

    from ossft.gptoss.facts import is_mxfp4

    kwargs = {"dtype": dtype, "attn_implementation": "eager"}
    if is_mxfp4(AutoConfig.from_pretrained(folder)):
        kwargs["quantization_config"] = Mxfp4Config(dequantize=True)
    return AutoModelForCausalLM.from_pretrained(folder, **kwargs)


def load_for_generation(model_dir: str | Path, base: str | None = None):
    """(model, tokenizer) from a model folder, or from an adapter folder on top of its base."""
    import torch
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: no such folder. Give a trained output folder, a merged model or a base model.")
    refuse_sharded_save(model_dir)
    adapter_config = model_dir / ADAPTER_CONFIG
    if not adapter_config.is_file() and not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir} holds neither a model (config.json) nor a LoRA adapter (adapter_config.json).")
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if not adapter_config.is_file():
        check_model_folder(model_dir)  # a damaged file is named here, not deep inside from_pretrained
        return _load_model(model_dir, dtype).eval(), AutoTokenizer.from_pretrained(model_dir)
    from peft import PeftModel

    base = base or read_json_object(adapter_config, ADAPTER_FIX).get("base_model_name_or_path")
    weights = model_dir / ADAPTER_WEIGHTS
    if weights.is_file():
        safetensors_header(weights, ADAPTER_FIX)
    elif not (model_dir / "adapter_model.bin").is_file():
        raise UserError(f"{model_dir} has adapter_config.json but no adapter_model.safetensors. {ADAPTER_FIX}")
    if not base:
        raise UserError(f"{adapter_config} names no base model; pass --base with its folder.")
    if not (Path(base) / "config.json").is_file():
        raise UserError(f"the adapter's base model is not at {base}; pass --base with its folder.")
    check_model_folder(Path(base))
    has_tokenizer = (model_dir / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(model_dir if has_tokenizer else base)
    try:
        network = PeftModel.from_pretrained(_load_model(Path(base), dtype), model_dir)
    except RuntimeError as exc:
        if "size mismatch" not in str(exc):
            raise
        first = next(line.strip() for line in str(exc).splitlines() if "size mismatch" in line)
        raise UserError(
            f"the adapter in {model_dir} was not trained on the base {base} ({first}). Pass --base with its real base."
        ) from exc
    return network.eval(), tokenizer


def system_block_of(model_dir: str | Path) -> harmony.SystemBlock:
    """The system message the model was trained with (from the run's recipe copy), else the default."""
    recipe_copy = Path(model_dir) / RECIPE_COPY
    if not recipe_copy.is_file():
        return harmony.SystemBlock()
    from ossft.data.tokenize import system_block
    from ossft.recipe.load import load_recipe

    return system_block(load_recipe(recipe_copy))


def prompt_ids(tokenizer, prompt: str, developer: str | None, system: harmony.SystemBlock) -> list[int]:
    conversation = harmony.Conversation((harmony.Message("user", prompt),), system, developer)
    pieces = harmony.render(conversation.header_messages() + list(conversation.messages), generation_prompt=True)
    return harmony.encode(pieces, text_encoder(tokenizer), special_token_ids(tokenizer))


def completion_channels(tokenizer, completion_ids: list[int]) -> dict[str, str]:
    """The channels of what the model wrote after the prompt's `<|start|>assistant`."""
    text = tokenizer.decode(completion_ids, skip_special_tokens=False)
    return harmony.parse_completion(harmony.START + "assistant" + text)


def generate(
    network,
    tokenizer,
    prompt: str,
    developer: str | None = None,
    max_new_tokens: int = 96,
    system: harmony.SystemBlock | None = None,
) -> dict:
    import torch

    ids = prompt_ids(tokenizer, prompt, developer, system or harmony.SystemBlock())
    special_ids = special_token_ids(tokenizer)
    device = next(network.parameters()).device
    with torch.no_grad():
        output = network.generate(
            torch.tensor([ids], device=device),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=[special_ids[t] for t in harmony.STOP_TOKENS],
            pad_token_id=tokenizer.pad_token_id,
        )
    completion = output[0, len(ids) :].tolist()
    return {
        "prompt": prompt,
        "completion": tokenizer.decode(completion, skip_special_tokens=False),
        "channels": completion_channels(tokenizer, completion),
        "tokens": len(completion),
    }


def answer(
    model_dir: str | Path,
    prompt: str,
    developer: str | None = None,
    max_new_tokens: int = 96,
    *,
    model_identity: str | None = None,
    reasoning_effort: str | None = None,
    base: str | None = None,
) -> dict:
    """`ossft generate`: load the model (or the adapter on `base`) and answer `prompt` under the system
    message it was trained with, its identity line and reasoning effort replaced where given."""
    import dataclasses

    trained = system_block_of(model_dir)
    system = dataclasses.replace(
        trained,
        model_identity=model_identity or trained.model_identity,
        reasoning_effort=reasoning_effort or trained.reasoning_effort,
    )
    network, tokenizer = load_for_generation(model_dir, base)
    return generate(network, tokenizer, prompt, developer, max_new_tokens, system)
