"""README.md of a trained model folder: what it was trained from, how, on what, how well, and how to use it.

The front matter is the Hugging Face Hub's model-card metadata, so the folder can be pushed as it is.
Everything comes from the recipe and the run summary; nothing from the environment.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from ossft import __version__
from ossft.checkpoints.layout import CARD_FILE, PLOT_FILE
from ossft.files import write_text_atomic
from ossft.train.provenance import recipe_yaml
from ossft.train.summary import format_value, gib


def write_model_card(run, summary: dict) -> Path:
    return write_text_atomic(run.output_dir / CARD_FILE, model_card(run.recipe, summary))


def model_card(recipe, summary: dict) -> str:
    adapter = summary["method"] == "lora"
    front = {
        "base_model": recipe.model.base_model,
        "library_name": "peft" if adapter else "transformers",
        "tags": ["gpt-oss", "ossft"],
    }
    name = Path(summary["output_dir"]).resolve().name
    what = "A LoRA adapter for" if adapter else "A full fine-tune of"
    parts = [
        f"---\n{yaml.safe_dump(front, sort_keys=False, allow_unicode=True)}---",
        f"# {name}",
        f"{what} `{recipe.model.base_model}`, trained with ossft {__version__} "
        "(TRL's SFTTrainer on conversations rendered in the harmony format).",
        "## Method\n\n" + method_section(recipe, summary),
        "## Data\n\n" + data_section(recipe, summary),
        "## Recipe\n\nThe resolved recipe, every default filled in (`ossft train` on it repeats this run):\n\n"
        f"```yaml\n{recipe_yaml(recipe).rstrip()}\n```",
        "## Metrics\n\n" + metrics_section(summary) + f"\n\n![loss]({PLOT_FILE})",
        "## How to use\n\n" + usage_section(summary),
    ]
    return "\n\n".join(parts) + "\n"


def method_section(recipe, summary: dict) -> str:
    params = (
        f"{summary['trainable_parameters']:,} of {summary['total_parameters']:,} parameters trained "
        f"({100 * summary['trainable_parameters'] / max(summary['total_parameters'], 1):.2f}%)."
    )
    lora = recipe.lora
    if lora is None:
        return f"Full fine-tuning: every weight of the model, experts included. {params}"
    if lora.experts == "all":
        experts = "every layer"
    elif lora.experts == "none":
        experts = "none"
    else:
        experts = "layers " + ", ".join(map(str, lora.experts))
    rows = [
        ("rank `r`", str(lora.r)),
        ("`lora_alpha`", str(lora.lora_alpha)),
        ("`lora_dropout`", str(lora.lora_dropout)),
        ("attention targets", ", ".join(f"`{t}`" for t in lora.target_modules)),
        ("expert layers (`mlp.experts.gate_up_proj`, `down_proj`)", experts),
    ]
    if lora.experts != "none":
        rows.append(("expert rank", str(lora.experts_r or lora.r)))
    return f"LoRA (PEFT). {params}\n\n" + markdown_table(("setting", "value"), rows)


def data_section(recipe, summary: dict) -> str:
    data = recipe.data
    sources = data.datasets
    single = len(sources) == 1  # per-source counts are only known when there is one source
    totals = (f"{summary['rows']:,}", f"{summary['examples']:,}", f"{summary['eval_examples']:,}")
    rows = []
    for source in sources:
        where = f"`{source.path}`" + (f" ({source.name}, split {source.split})" if source.name else "")
        if source.sample is not None:
            where += f", sample {source.sample}"
        rows.append((where, source.format, *(totals if single else ("", "", ""))))
    if not single:
        rows.append(("all sources", "", *totals))
    table = markdown_table(("source", "format", "rows", "train examples", "eval examples"), rows)
    thinking = {
        "per_turn": "per_turn (each assistant turn is its own example, in the context a server gives it: "
        "earlier answered turns without their analysis)",
        "keep_all": "keep_all (one example per conversation, every turn's analysis kept)",
    }[data.thinking]
    renderer = (
        "ossft's harmony renderer, what vLLM serves" if data.chat_format == "harmony" else "the tokenizer's template"
    )
    notes = [
        f"- chat format: {data.chat_format} ({renderer})",
        f"- thinking: {thinking}",
        f"- trained turns: {data.train_on}; reasoning effort in the system message: {data.system.reasoning_effort}",
        f"- {summary['rows_skipped']:,} rows skipped as bad, {summary['dropped_too_long']:,} examples dropped for length "
        f"(max_length {recipe.train.max_length})",
        f"- {summary['dataset_tokens']:,} tokens per epoch, {summary['trained_tokens_per_epoch']:,} of them trained",
    ]
    return table + "\n\n" + "\n".join(notes)


def metrics_section(summary: dict) -> str:
    keys = [
        "steps",
        "epochs",
        "examples",
        "tokens_seen",
        "tokens_trained",
        "tokens_per_second",
        "tokens_per_second_steady",
        "steady_state_steps",
        "first_loss",
        "last_loss",
        "best_loss",
        "loss_drop",
        "eval_loss",
        "wall_seconds",
        "peak_cpu_rss_bytes",
    ]
    labels = {"peak_cpu_rss_bytes": "peak CPU RSS", "tokens_per_second_steady": "tokens per second (steady state)"}
    rows = [(labels.get(key, key.replace("_", " ")), format_value(key, summary.get(key))) for key in keys]
    for gpu in summary.get("peak_gpu_memory") or []:
        rows.append(
            (
                f"peak GPU {gpu['device']} memory ({gpu['name']})",
                f"{gib(gpu['max_allocated_bytes'])} allocated, {gib(gpu['max_reserved_bytes'])} reserved",
            )
        )
    return markdown_table(("metric", "value"), rows)


def usage_section(summary: dict) -> str:
    out = summary["output_dir"]
    here = shlex.quote(out)
    mxfp4 = shlex.quote(f"{out}-mxfp4")
    if summary["method"] == "lora":
        merged = shlex.quote(f"{out}-merged")
        lines = [
            f'ossft generate {here} --prompt "What is 12 + 7?"   # the adapter on its base model',
            f"ossft merge-lora {here} --out {merged}   # one bf16 model with the LoRA merged in",
            f"ossft export {merged} --mxfp4 --out {mxfp4}   # experts back to MXFP4, the released format",
            f"vllm serve {mxfp4}   # an OpenAI-compatible server",
        ]
        intro = "Try the adapter, merge it into the base weights, quantize the experts, and serve:"
    else:
        lines = [
            f'ossft generate {here} --prompt "What is 12 + 7?"',
            f"ossft export {here} --mxfp4 --out {mxfp4}   # experts back to MXFP4, the released format",
            f"vllm serve {mxfp4}   # an OpenAI-compatible server",
        ]
        intro = "Try the model, quantize its experts to MXFP4, and serve:"
    return f"{intro}\n\n```bash\n" + "\n".join(lines) + "\n```"


def markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])
