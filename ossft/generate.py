"""Ask a trained model something: harmony prompt -> greedy generation -> its channels, parsed."""

from __future__ import annotations

import json
from pathlib import Path

from ossft import harmony
from ossft.data import special_token_ids, text_encoder
from ossft.errors import UserError


def load_for_generation(model_dir: str | Path, base: str | None = None):
    """A full model folder, or a LoRA adapter folder on top of its base model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    adapter_config = model_dir / "adapter_config.json"
    if not adapter_config.is_file() and not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir} holds neither a model (config.json) nor a LoRA adapter (adapter_config.json).")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if adapter_config.is_file():
        from peft import PeftModel

        base = base or json.loads(adapter_config.read_text())["base_model_name_or_path"]
        if not (Path(base) / "config.json").is_file():
            raise UserError(f"the adapter's base model is not at {base}; pass --base with its folder.")
        network = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, attn_implementation="eager")
        network = PeftModel.from_pretrained(network, model_dir)
    else:
        network = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager")
    return network.eval(), tokenizer


def system_block_of(model_dir: str | Path) -> harmony.SystemBlock:
    """The system message the model was trained with (from the run's recipe copy), else the default."""
    recipe_copy = Path(model_dir) / "recipe.yaml"
    if not recipe_copy.is_file():
        return harmony.SystemBlock()
    from ossft.data import system_block
    from ossft.recipe import load_recipe

    return system_block(load_recipe(recipe_copy))


def generate(
    network,
    tokenizer,
    prompt: str,
    developer: str | None = None,
    max_new_tokens: int = 96,
    system: harmony.SystemBlock | None = None,
) -> dict:
    import torch

    conversation = harmony.Conversation((harmony.Message("user", prompt),), system or harmony.SystemBlock(), developer)
    pieces = harmony.render(conversation.header_messages() + list(conversation.messages), generation_prompt=True)
    special_ids = special_token_ids(tokenizer)
    ids = harmony.encode(pieces, text_encoder(tokenizer), special_ids)
    with torch.no_grad():
        output = network.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=[special_ids[t] for t in harmony.STOP_TOKENS],
            pad_token_id=tokenizer.pad_token_id,
        )
    completion = tokenizer.decode(output[0, len(ids) :], skip_special_tokens=False)
    # The prompt ended at "<|start|>assistant": put it back so the first message parses like the rest.
    channels = harmony.parse_completion(harmony.START + "assistant" + completion)
    return {"prompt": prompt, "completion": completion, "channels": channels}
