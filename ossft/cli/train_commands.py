"""`ossft train` (here, or re-run under `accelerate launch`) and `ossft plot` of a run's output."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ossft.cli.console import console, state, status, user_errors
from ossft.cli.options import RecipeArg, SetOpt
from ossft.errors import UserError


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
    from ossft.launch.command import child_arguments, plan_launch
    from ossft.launch.topology import LaunchFlags

    resolved = _recipe_to_train(recipe, set_ or [], smoke)
    flags = LaunchFlags(nproc, nnodes, node_rank, master_addr, master_port)
    child = child_arguments(recipe, set_ or [], smoke=smoke, skip_disk_check=skip_disk_check, debug=state["debug"])
    plan = plan_launch(resolved, flags, child)
    for line in plan.notes:
        status(line)
    if dry_run:
        _print_plan(plan)
    elif plan.command:
        _launch(plan)
    else:
        _train_here(resolved, check_disk=not skip_disk_check)


def _recipe_to_train(recipe: Path, overrides: list[str], smoke: bool):
    """The recipe as given, or with --smoke its copy on the tiny model (each change said)."""
    from ossft.recipe.load import load_recipe

    resolved = load_recipe(recipe, overrides)
    if not smoke:
        return resolved
    from ossft.train.smoke import ensure_tiny_model, smoke_recipe

    in_mxfp4 = resolved.experts_in_mxfp4()  # of the real model: the tiny one stores its experts alike
    resolved, notes = smoke_recipe(resolved, ensure_tiny_model(mxfp4=in_mxfp4))
    for line in notes:
        status(line)
    return resolved


def _print_plan(plan) -> None:
    from ossft.launch.command import printable

    for line in plan.describe():
        console.print(line, highlight=False)
    # Unwrapped, so that it can be copied and run as it is.
    sys.stdout.write((printable(plan) if plan.command else "train in this process") + "\n")


def _launch(plan) -> None:
    """Run the processes; exit as the launch outcome says (75: preempted, resume with the same command)."""
    from ossft.launch.command import printable
    from ossft.launch.ranks import run_launch

    status(f"launching {plan.topology.processes} processes:")
    sys.stdout.write(printable(plan) + "\n")
    outcome = run_launch(plan)
    if outcome.failed:
        raise UserError(outcome.message, exit_code=outcome.code)
    if outcome.message:
        status(f"[yellow]{escape(outcome.message)}[/]")
    raise typer.Exit(outcome.code)


def _train_here(resolved, check_disk: bool) -> None:
    from ossft.launch.ranks import report_rank_finished
    from ossft.train.run import run_training
    from ossft.train.summary import summarize, summary_table

    run = run_training(resolved, on_status=status, check_disk=check_disk)  # writes summary.json, loss.png, card
    if run.trainer.is_world_process_zero():
        console.print(summary_table(summarize(run)))
    report_rank_finished()


@user_errors
def plot(
    output_dir: Annotated[Path, typer.Argument(help="The output folder of `ossft train`.", show_default=False)],
):
    """Redraw loss.png (train and eval loss, learning rate) from the newest trainer_state.json.

    Example: ossft plot outputs/quickstart
    """
    from ossft.train.plots import redraw

    written, state_file = redraw(output_dir)
    console.print(f"wrote [bold]{written}[/] from {state_file}")
