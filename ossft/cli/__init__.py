"""The `ossft` command. One short function per command; the work happens in the modules."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ossft.errors import UserError

app = typer.Typer(
    help="Fine-tune OpenAI's gpt-oss models from one YAML recipe.\n\n"
    "Example: ossft tiny-model models/tiny-gpt-oss && ossft train recipes/quickstart.yaml",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
# Soft wrap: a message is never broken inside a path or a command, so it can be copied as printed
# (rich otherwise wraps at 80 columns when the output is not a terminal). Tables still fit the width.
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)
_state = {"debug": False}

RecipeArg = Annotated[Path, typer.Argument(help="The YAML recipe.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one key, typed as YAML: --set train.learning_rate=1e-4 (repeatable)."),
]


def user_errors(command):
    """User mistakes -> one short message and exit code 2; with --debug, the traceback too."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            from ossft.launch.launcher import rank_label, report_rank_failure

            report_rank_failure(exc.exit_code)
            if _state["debug"]:
                raise
            # Escaped: a message quotes the user's data, and a row holding "[/]" is not rich markup.
            errors.print(f"[bold red]error:[/] {escape(rank_label() + str(exc))}", highlight=False)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for every error.")] = False):
    _state["debug"] = debug


@app.command()
@user_errors
def validate(recipe: RecipeArg, set_: SetOpt = None):
    """Check a recipe and that its data can be found; print it resolved, every default filled in.

    Local data paths are resolved as training resolves them (from the current folder); a Hub dataset
    that is not in the local cache is a warning, since training may download it.

    Example: ossft validate recipes/quickstart.yaml --set train.learning_rate=1e-4
    """
    from ossft.data.sources import check_source
    from ossft.data.tokenize import source_spec
    from ossft.recipe.load import dump_recipe, load_recipe_with_origins

    resolved, origins = load_recipe_with_origins(recipe, set_ or [])
    problems, warnings = [], []
    for index, source in enumerate(resolved.data.datasets):
        origin = origins.of(("data", "datasets", index, "path"))
        try:
            warning = check_source(source_spec(source))
        except UserError as exc:  # training's words, so the two never disagree; only the line is added
            problems.append(f"{origin}: {exc}")
            continue
        if warning:
            warnings.append(f"{origin}: {warning}")
    if problems:
        raise UserError("\n".join(problems))
    sys.stdout.write(dump_recipe(resolved))
    for warning in warnings:
        errors.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    errors.print(f"[green]ok:[/] {recipe} is a valid recipe.")


@app.command()
def schema():
    """Print the recipe's JSON schema (for editor completion and checks).

    Example: ossft schema > ossft-recipe.schema.json
    """
    from ossft.recipe.load import recipe_json_schema

    sys.stdout.write(json.dumps(recipe_json_schema(), indent=2) + "\n")


@app.command("tiny-model")
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


@app.command()
@user_errors
def train(
    recipe: RecipeArg,
    set_: SetOpt = None,
    nproc: Annotated[int | None, typer.Option(min=1, help="Processes (GPUs) per node.")] = None,
    nnodes: Annotated[int | None, typer.Option(min=1, help="Nodes in the run.")] = None,
    node_rank: Annotated[int | None, typer.Option(min=0, help="This node's index, 0 to nnodes-1.")] = None,
    master_addr: Annotated[str | None, typer.Option(help="Address of node 0, the same on every node.")] = None,
    master_port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port on node 0 (default 29500).")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the resolved launch values and command; start nothing.")
    ] = False,
    smoke: Annotated[
        bool, typer.Option("--smoke", help="Run the recipe on the tiny model for a few steps (any CPU).")
    ] = False,
    skip_disk_check: Annotated[
        bool, typer.Option("--skip-disk-check", help="Start even if the checkpoints may not fit on the disk.")
    ] = False,
):
    """Fine-tune as the recipe says; print a summary at the end.

    One process trains right here; more re-run this command under `accelerate launch`. Processes,
    nodes and node 0's address come from the flags, else SkyPilot's or Slurm's environment, else the
    recipe's launch: section, else the GPUs of this machine.

    Example: ossft train recipes/quickstart.yaml --set train.num_train_epochs=1

    Example: ossft train recipes/gpt-oss-120b-full-2node-h100.yaml --nnodes 2 --node-rank 0 --master-addr 10.0.0.1
    """
    from ossft.launch import launcher
    from ossft.recipe.load import load_recipe
    from ossft.train.guards import PREEMPTED_EXIT

    resolved = load_recipe(recipe, set_ or [])
    if smoke:
        from ossft.train.smoke import ensure_tiny_model, smoke_recipe

        resolved, notes = smoke_recipe(resolved, ensure_tiny_model())
        for note in notes:
            _status(note)
    flags = launcher.LaunchFlags(nproc, nnodes, node_rank, master_addr, master_port)
    child = ["--debug"] * _state["debug"] + ["train", str(recipe)]
    child += [arg for value in set_ or [] for arg in ("--set", value)]
    child += ["--smoke"] * smoke + ["--skip-disk-check"] * skip_disk_check
    plan = launcher.plan_launch(resolved, flags, child)
    for note in plan.notes:
        _status(note)
    if dry_run:
        for line in plan.describe():
            console.print(line, highlight=False)
        # Unwrapped, so that it can be copied and run as it is.
        sys.stdout.write((launcher.printable(plan) if plan.command else "train in this process") + "\n")
        return
    if plan.command:
        _status(f"launching {plan.topology.processes} processes:")
        sys.stdout.write(launcher.printable(plan) + "\n")
        outcome = launcher.run_launch(plan)
        code = outcome.code
        if outcome.crashed_after_finishing:
            _status(
                "[yellow]note:[/] a rank crashed at interpreter exit after every rank had finished and the "
                "model was saved and verified (a gloo shutdown bug, pytorch/pytorch#190489): the run is complete."
            )
        if code == PREEMPTED_EXIT:
            _status(f"preempted: every rank wrote its checkpoint; run the same command to resume (exit {code})")
            raise typer.Exit(code)
        if code:
            raise UserError("training stopped: the error of each failing rank is printed above.", exit_code=code)
        return
    _train_here(resolved, check_disk=not skip_disk_check)


def _train_here(resolved, check_disk: bool) -> None:
    from ossft.launch.launcher import report_rank_finished
    from ossft.train.run import run_training
    from ossft.train.summary import summarize, summary_table

    run = run_training(
        resolved, on_status=_status, check_disk=check_disk
    )  # writes summary.json, loss.png and the model card
    if run.trainer.is_world_process_zero():
        console.print(summary_table(summarize(run)))
    report_rank_finished()


def _status(line: str) -> None:
    """Progress lines come from rank 0 only; errors come from every rank (see user_errors)."""
    if os.environ.get("RANK", "0") == "0":
        console.print(f"[cyan]ossft[/] {line}")


@app.command()
@user_errors
def plan(
    recipe: RecipeArg,
    gpus: Annotated[int | None, typer.Option(min=1, help="GPUs per node (default: the recipe's).")] = None,
    nodes: Annotated[int | None, typer.Option(min=1, help="Nodes (default: the recipe's).")] = None,
    gpu_memory: Annotated[float, typer.Option(min=1, help="Memory of one GPU, GiB (H100: 80, H200: 141).")] = 80,
    set_: SetOpt = None,
):
    """Estimate the memory per GPU and the disk a recipe needs, and what to change if it won't fit.

    Example: ossft plan recipes/gpt-oss-20b-full-8gpu.yaml --gpus 4 --gpu-memory 80
    """
    from rich.table import Table

    from ossft.launch import memory as planner
    from ossft.recipe.load import load_recipe

    resolved = load_recipe(recipe, set_ or [])
    per_node = gpus or (resolved.launch.num_processes or 1) // resolved.launch.num_machines
    layout = planner.layout_for(resolved, per_node, nodes or resolved.launch.num_machines)
    estimate = planner.estimate(resolved, layout)
    title = f"ossft plan: {recipe.name} on {layout.gpus} GPU(s), per GPU"
    table = Table(title=title, show_header=False, title_justify="left")
    for label, value in planner.describe(estimate):
        table.add_row(label, value)
    checkpoint, final = planner.checkpoint_bytes(resolved, layout)
    table.add_row("disk: one checkpoint", f"{checkpoint / planner.GIB:,.1f} GiB")
    table.add_row("disk: final save", f"{final / planner.GIB:,.1f} GiB")
    console.print(table)
    longest = planner.longest_sequence(resolved, layout, gpu_memory)
    batch = resolved.train.per_device_train_batch_size
    console.print(
        f"longest train.max_length that fits at micro-batch {batch}: {longest:,} tokens"
        if longest
        else f"not even 1,024 tokens fit at micro-batch {batch}",
        highlight=False,
    )
    if planner.fits(estimate, gpu_memory):
        console.print(f"[green]fits[/] on {gpu_memory:g} GiB GPUs (estimate, reserved memory per GPU).")
        return
    console.print(f"[red]does not fit[/] on {gpu_memory:g} GiB GPUs. Try:")
    for idea in planner.suggestions(resolved, layout, estimate, gpu_memory):
        console.print(f"  - {idea}", highlight=False)


@app.command("inspect-data")
@user_errors
def inspect_data(
    recipe: RecipeArg,
    rows: Annotated[int | None, typer.Option(min=1, help="Rows to show (default: 3; with --json, all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per training example.")] = False,
    set_: SetOpt = None,
):
    """Show the rendered examples with the trained spans highlighted, then the data totals.

    Example: ossft inspect-data recipes/quickstart.yaml --rows 2
    """
    from ossft.data import inspect as show
    from ossft.model.load import load_tokenizer
    from ossft.recipe.load import load_recipe

    resolved = load_recipe(recipe, set_ or [])
    tokenizer = load_tokenizer(resolved)
    if as_json:
        for line in show.json_lines(show.example_records(resolved, tokenizer, rows)):
            sys.stdout.write(line + "\n")
        return
    for record in show.example_records(resolved, tokenizer, rows or 3):
        console.print(f"[bold]── {record['source']} row {record['row']} ({record['tokens']} tokens)[/]")
        console.print(show.highlighted(record), highlight=False)
    with count_progress("tokenizing examples") as tick:
        stats = show.full_stats(resolved, tokenizer, on_progress=tick)
    console.print(show.totals_table(stats))


@app.command()
@user_errors
def preprocess(recipe: RecipeArg, set_: SetOpt = None):
    """Tokenize the recipe's data into the cache now (e.g. once before a multi-node run).

    Example: ossft preprocess recipes/quickstart.yaml --set data.num_proc=8
    """
    from ossft.data import inspect as show
    from ossft.data.prepare import prepare_data
    from ossft.model.load import load_tokenizer
    from ossft.recipe.load import load_recipe

    resolved = load_recipe(recipe, set_ or [])
    tokenizer = load_tokenizer(resolved)
    with count_progress("tokenizing examples") as tick:
        prepared = prepare_data(resolved, tokenizer, on_progress=tick)
    console.print(show.totals_table(prepared.stats, shown_above=False))
    state = "already cached" if prepared.from_cache else "cached"
    console.print(f"{state}: [bold]{prepared.cache_path}[/]")


@app.command()
@user_errors
def generate(
    model_dir: Annotated[
        Path, typer.Argument(help="A model, merged model or LoRA adapter folder.", show_default=False)
    ],
    prompt: Annotated[str, typer.Option(help="The user message.")] = "What is 12 + 7?",
    system: Annotated[str | None, typer.Option(help="Model identity line of the harmony system message.")] = None,
    developer: Annotated[str | None, typer.Option(help="Developer instructions.")] = None,
    reasoning_effort: Annotated[str | None, typer.Option(help="low, medium or high (default: as trained).")] = None,
    base: Annotated[
        str | None, typer.Option(help="Base model of a LoRA adapter, if not where training found it.")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Stop after this many tokens.")] = 96,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
):
    """Generate one answer in harmony and show its analysis and final channels.

    Example: ossft generate outputs/quickstart --prompt "Quelle est la capitale de l'Italie ?" --reasoning-effort low
    """
    import dataclasses

    from ossft.model.generate import generate as run_generate
    from ossft.model.generate import load_for_generation, system_block_of

    if reasoning_effort not in (None, "low", "medium", "high"):
        raise UserError(f"--reasoning-effort {reasoning_effort}: expected low, medium or high.")
    block = system_block_of(model_dir)
    block = dataclasses.replace(
        block,
        model_identity=system or block.model_identity,
        reasoning_effort=reasoning_effort or block.reasoning_effort,
    )
    network, tokenizer = load_for_generation(model_dir, base)
    result = run_generate(network, tokenizer, prompt, developer, max_new_tokens, block)
    if as_json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        return
    console.print(f"[bold]user:[/] {prompt}", highlight=False)
    for channel, text in result["channels"].items():
        console.print(f"[bold]{channel}:[/] {text}", highlight=False)
    if not result["channels"]:
        console.print(f"[bold]raw:[/] {result['completion']}", highlight=False)


@contextlib.contextmanager
def byte_progress(description: str):
    """A progress bar in bytes with ETA; yields the `on_progress(done, total)` callback."""
    from rich.progress import DownloadColumn

    with _progress(description, DownloadColumn()) as tick:
        yield tick


@contextlib.contextmanager
def count_progress(description: str):
    """The same bar counting items (examples tokenized), for the data steps."""
    from rich.progress import MofNCompleteColumn

    with _progress(description, MofNCompleteColumn()) as tick:
        yield tick


@contextlib.contextmanager
def _progress(description: str, amount_column):
    """One style for every long step of ossft: what, bar, how much of how much, time left (on stderr)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), amount_column, TimeRemainingColumn())
    with Progress(*columns, console=errors, transient=True) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


@app.command()
@user_errors
def export(
    model_dir: Annotated[Path, typer.Argument(help="A merged or fully fine-tuned model folder.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Folder to write (must not exist or be empty).")],
    mxfp4: Annotated[
        bool, typer.Option("--mxfp4", help="Quantize the experts to MXFP4 (the only format so far).")
    ] = False,
):
    """Write a model with its experts back in MXFP4, the released checkpoints' format (4x smaller experts).

    Example: ossft export outputs/merged --mxfp4 --out outputs/merged-mxfp4
    """
    from ossft.convert.export import export_mxfp4

    if not mxfp4:
        raise UserError("export: say which format to write; --mxfp4 is the one ossft writes.")
    with byte_progress("quantizing experts") as on_progress:
        report = export_mxfp4(model_dir, out, on_progress=on_progress)
    from rich.table import Table

    table = Table(title="MXFP4 quantization error (relative RMS)", title_justify="left")
    table.add_column("tensor")
    table.add_column("error", justify="right")
    for name, error in report.errors.items():
        table.add_row(name, f"{error:.4f}")
    console.print(table)
    console.print(
        f"wrote and read back {report.tensors} tensors in {len(report.shards)} shard(s) to [bold]{report.out_dir}[/] "
        f"({report.bytes_in / 2**20:,.1f} MiB -> {report.bytes_out / 2**20:,.1f} MiB, {report.seconds:.1f} s)"
    )


@app.command("merge-lora")
@user_errors
def merge_lora(
    adapter_dir: Annotated[
        Path, typer.Argument(help="A LoRA adapter folder (ossft train's output).", show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to write (must not exist or be empty).")],
    base: Annotated[str | None, typer.Option(help="Base model; default: the one in adapter_config.json.")] = None,
    dtype: Annotated[str, typer.Option(help="dtype of dequantized MXFP4 experts: bfloat16 or float32.")] = "bfloat16",
):
    """Merge attention and expert LoRA into the base weights, one shard at a time, and check the result.

    Example: ossft merge-lora outputs/quickstart --out outputs/quickstart-merged
    """
    from ossft.convert.merge_lora import merge_lora as run_merge

    if dtype not in ("bfloat16", "float32"):
        raise UserError(f"--dtype {dtype}: expected bfloat16 or float32.")
    with byte_progress("merging") as on_progress:
        report = run_merge(adapter_dir, out, base=base, on_progress=on_progress, dtype=dtype)
    console.print(
        f"merged LoRA into {len(report.merged_tensors)} of {report.tensors} tensors; wrote and read back "
        f"{report.shards} shard(s) in [bold]{report.out_dir}[/] ({report.seconds:.1f} s). "
        f"Next: ossft generate {report.out_dir}, or ossft export {report.out_dir} --mxfp4 --out DIR"
    )


@app.command("merge-shards")
@user_errors
def merge_shards(
    source: Annotated[
        Path, typer.Argument(help="An FSDP run's output folder, or one of its checkpoint-N.", show_default=False)
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder to write (must not exist or be empty); default: merged/.")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="Cast every tensor to bf16, fp16 or fp32; default: as saved.")
    ] = None,
    max_shard_size: Annotated[str, typer.Option(help="Largest weight file: 5GB, 2GiB, 500MB, or bytes.")] = "5GiB",
    base: Annotated[
        str | None, typer.Option(help="Base model, for the config; default: model.base_model of the run's recipe.")
    ] = None,
):
    """Turn an FSDP sharded save (.distcp files) into a Hugging Face model or LoRA adapter, one shard at a time.

    Reads the run's final save, or else its newest checkpoint-N.

    Example: ossft merge-shards outputs/gpt-oss-20b-full --out outputs/gpt-oss-20b-full-hf --dtype bf16
    """
    from ossft.convert.merge_shards import merge_shards as run_merge
    from ossft.convert.merge_shards import parse_size

    limit = parse_size(max_shard_size)
    with byte_progress("merging shards") as on_progress:
        report = run_merge(source, out, base=base, dtype=dtype, max_shard_size=limit, on_progress=on_progress)
    what = "LoRA adapter" if report.adapter else "model"
    after = f"ossft merge-lora {report.out_dir} --out DIR" if report.adapter else f"ossft generate {report.out_dir}"
    console.print(
        f"wrote and read back the {what} saved in {report.source}: {report.tensors} tensors "
        f"({report.bytes / 2**20:,.1f} MiB, {report.dtype}) in {report.shards} file(s) in [bold]{report.out_dir}[/] "
        f"({report.seconds:.1f} s). Next: {after}"
    )
    if report.tokenizer_from is None:
        errors.print("[yellow]note:[/] no tokenizer found beside the save nor with the base model; none was copied.")


@app.command()
@user_errors
def plot(
    output_dir: Annotated[Path, typer.Argument(help="The output folder of `ossft train`.", show_default=False)],
):
    """Redraw loss.png (train and eval loss, learning rate) from the newest trainer_state.json.

    Example: ossft plot outputs/quickstart
    """
    from ossft.train.plots import redraw

    written, state = redraw(output_dir)
    console.print(f"wrote [bold]{written}[/] from {state}")


@app.command()
@user_errors
def init(
    model: Annotated[str | None, typer.Option(help="20b or 120b (gpt-oss-20b / gpt-oss-120b).")] = None,
    method: Annotated[str | None, typer.Option(help="lora (adapters) or full (every weight trained).")] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs on each node.")] = None,
    nodes: Annotated[int | None, typer.Option(help="Nodes (machines); num_processes becomes gpus x nodes.")] = None,
    out: Annotated[Path | None, typer.Option(help="The recipe file to write.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
):
    """Write a commented recipe for a model, a method and your GPUs, made from the closest shipped recipe.

    In a terminal it asks for what is not given; otherwise it takes 20b, lora, 1 GPU, 1 node, recipe.yaml.

    Example: ossft init --model 120b --method full --gpus 8 --nodes 2 --out recipes/my-120b.yaml
    """
    from ossft.recipe import templates

    given = {"model": model, "method": method, "gpus": gpus, "nodes": nodes, "out": out}
    ask = templates.ask_in_terminal if templates.stdin_is_terminal() else None
    choice, defaulted = templates.resolve_choice(given, ask)
    if defaulted:
        used = ", ".join(f"--{name} {getattr(choice, name)}" for name in defaulted)
        errors.print(f"not a terminal, so nothing was asked; defaults: {used}", highlight=False)
    result = templates.write_recipe(choice, force=force)
    for note in result.notes:
        errors.print(f"[yellow]note:[/] {note}", highlight=False)
    layout = templates.layout_words(choice.gpus, choice.nodes)
    console.print(
        f"wrote [bold]{result.path}[/] for gpt-oss-{choice.model}, {choice.method}, {layout} "
        f"(from recipes/{result.template.name}). Next: ossft validate {result.path}",
        highlight=False,
    )
