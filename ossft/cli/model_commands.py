"""Commands that make or run a model: tiny-model (a random gpt-oss, offline) and generate."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from ossft.cli.console import console, user_errors


@user_errors
def tiny_model(
    out: Annotated[Path, typer.Argument(help="Folder to create.", show_default=False)],
    layers: Annotated[int, typer.Option(help="Decoder layers (alternating sliding / full attention).")] = 2,
    experts: Annotated[int, typer.Option(help="Experts per layer.")] = 4,
    top_k: Annotated[int, typer.Option(help="Experts each token is routed to.")] = 2,
    hidden: Annotated[int, typer.Option(help="Hidden size (also the expert width).")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 0,
    mxfp4: Annotated[
        bool, typer.Option("--mxfp4", help="Store the experts as MXFP4, like the released checkpoints.")
    ] = False,
    corpus: Annotated[
        Path | None, typer.Option(help="Conversations (.jsonl) for the tokenizer; default: the sample data.")
    ] = None,
):
    """Make a tiny random gpt-oss and tokenizer, offline, in Hugging Face format.

    Example: ossft tiny-model models/tiny-gpt-oss --layers 4 --experts 8
    """
    from ossft.model.tiny import SAMPLE_DATA, TinySpec, write_tiny_model

    spec = TinySpec(layers=layers, experts=experts, experts_per_token=top_k, hidden=hidden, seed=seed)
    path = write_tiny_model(out, spec, corpus or SAMPLE_DATA, mxfp4=mxfp4)
    console.print(
        f"tiny gpt-oss written to [bold]{path}[/] ({layers} layers, {experts} experts, top-{top_k}, hidden {hidden})"
    )


@user_errors
def generate(
    model_dir: Annotated[
        Path, typer.Argument(help="A model, merged model or LoRA adapter folder.", show_default=False)
    ],
    prompt: Annotated[str, typer.Option(help="The user message.")] = "What is 12 + 7?",
    system: Annotated[str | None, typer.Option(help="Model identity line of the harmony system message.")] = None,
    developer: Annotated[str | None, typer.Option(help="Developer instructions.")] = None,
    reasoning_effort: Annotated[
        Literal["low", "medium", "high"] | None, typer.Option(help="Reasoning effort (default: as trained).")
    ] = None,
    base: Annotated[
        str | None, typer.Option(help="Base model of a LoRA adapter, if not where training found it.")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Stop after this many tokens.")] = 96,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
):
    """Generate one answer in harmony and show its analysis and final channels.

    Example: ossft generate outputs/quickstart --prompt "Quelle est la capitale de l'Italie ?" --reasoning-effort low
    """
    from ossft.model.generate import answer

    result = answer(
        model_dir,
        prompt,
        developer,
        max_new_tokens,
        model_identity=system,
        reasoning_effort=reasoning_effort,
        base=base,
    )
    if as_json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        return
    console.print(f"[bold]user:[/] {prompt}", highlight=False)
    for channel, text in result["channels"].items():
        console.print(f"[bold]{channel}:[/] {text}", highlight=False)
    if not result["channels"]:
        console.print(f"[bold]raw:[/] {result['completion']}", highlight=False)
