"""What a run leaves for people: summary.json, loss.png, the model card, and the table printed at the end.

Everything here is computed from the run itself (the trainer's state, the data totals, the
measurements of callbacks.RunMeter), never from the environment, so no token or secret can end up
in a written file. `summarize` gives the same result every time it is called on a finished run.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from ossft.checkpoints.layout import (
    ADAPTER_CONFIG,
    CARD_FILE,
    CHECKPOINT,
    FSDP_MODEL_FOLDER,
    PLOT_FILE,
    RECIPE_COPY,
    SUMMARY_FILE,
)
from ossft.files import write_json_atomic
from ossft.units import GIB


def summarize(run) -> dict:
    state = run.trainer.state
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    eval_losses = [entry["eval_loss"] for entry in state.log_history if "eval_loss" in entry]
    output = run.output_dir
    adapter = (output / ADAPTER_CONFIG).is_file()
    stats = run.data.stats
    measured = run.measurements
    summary = {
        "output_dir": str(output),
        "method": "lora" if adapter else "full",
        "steps": state.global_step,
        "epochs": round(state.epoch or 0.0, 3),
        "rows": stats.rows,
        "rows_skipped": stats.rows_skipped,
        "examples": stats.examples,
        "dropped_too_long": stats.dropped_too_long,
        "eval_examples": stats.eval_examples,
        "dataset_tokens": stats.tokens,
        "trained_tokens_per_epoch": stats.trained_tokens,
        "tokens_seen": measured.tokens_seen if measured else None,
        "tokens_trained": measured.tokens_trained if measured else None,
        # Overall: every token over the whole train() call, evaluation and checkpoints included.
        "tokens_per_second": rate(measured.tokens_seen, run.wall_seconds) if measured else None,
        # Steady: the steps of steady_state_steps only, their forward, backward and optimizer time.
        "tokens_per_second_steady": rate(measured.steady_tokens_seen, measured.steady_seconds) if measured else None,
        "steady_state_steps": measured.steady_steps if measured else None,
        "peak_cpu_rss_bytes": measured.peak_cpu_rss_bytes if measured else None,
        "peak_gpu_memory": measured.peak_gpu if measured else [],
        "processes": run.trainer.accelerator.num_processes,
        "distributed": run.distributed,
        "attention": run.attention,
        "mxfp4_experts": run.recipe.experts_in_mxfp4(),  # frozen experts kept in MXFP4 (model.mxfp4_experts)
        # DDP only: every rank's digest of its trained weights; all equal when the replicas agree.
        "replicas_identical": len(set(run.replica_digests)) == 1 if run.replica_digests else None,
        "replica_digests": run.replica_digests,
        "trainable_parameters": run.trainable_params,
        "total_parameters": run.total_params,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "best_loss": min(losses) if losses else None,
        "loss_drop": (1 - losses[-1] / losses[0]) if len(losses) > 1 and losses[0] else None,
        "eval_loss": eval_losses[-1] if eval_losses else None,
        "wall_seconds": round(run.wall_seconds, 1),
        "outputs": outputs(output),
        "next": next_commands(output, adapter),
    }
    return summary


def rate(tokens: int, seconds: float) -> float | None:
    return round(tokens / seconds, 1) if seconds > 0 else None


def outputs(output: Path) -> dict:
    checkpoints = sorted(
        (p for p in output.glob("checkpoint-*") if CHECKPOINT.fullmatch(p.name)),
        key=lambda p: int(p.name.split("-")[1]),
    )
    return {
        "model": str(output),
        "summary": str(output / SUMMARY_FILE),
        "plot": str(output / PLOT_FILE),
        "model_card": str(output / CARD_FILE),
        "recipe": str(output / RECIPE_COPY),
        "checkpoints": [str(p) for p in checkpoints],
    }


def next_commands(output: Path, adapter: bool) -> list[str]:
    where = shlex.quote(str(output))
    if (output / FSDP_MODEL_FOLDER).is_dir():  # an FSDP run: shards first, then as any other run
        merged = output / "merged"
        return [f"ossft merge-shards {where} --out {shlex.quote(str(merged))}"] + next_commands(merged, adapter)
    if adapter:
        return [f"ossft generate {where}", f"ossft merge-lora {where} --out {shlex.quote(f'{output}-merged')}"]
    return [f"ossft generate {where}", f"ossft export {where} --mxfp4 --out {shlex.quote(f'{output}-mxfp4')}"]


def write_summary(summary: dict, output_dir: str | Path) -> Path:
    return write_json_atomic(Path(output_dir) / SUMMARY_FILE, summary)


# ---------------------------------------------------------------------------------------------
# The terminal table


def gib(value: int) -> str:
    return f"{value / GIB:,.2f} GiB"


def format_value(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "loss_drop":
        return f"{100 * value:.1f}%"
    if key.startswith("tokens_per_second"):
        return f"{value:,.0f} tokens/s"
    if key == "peak_cpu_rss_bytes":
        return gib(value)
    if key == "wall_seconds":
        return f"{value:,.1f} s"
    if key == "steady_state_steps":
        return f"{value[0]}-{value[1]} (warm-up steps left out)"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def table_rows(summary: dict) -> list[tuple[str, str]]:
    rows = []
    for key, value in summary.items():
        if key == "peak_gpu_memory":
            for gpu in value:
                rows.append(
                    (
                        f"peak GPU {gpu['device']} memory",
                        f"{gib(gpu['max_allocated_bytes'])} allocated, {gib(gpu['max_reserved_bytes'])} reserved"
                        f" ({gpu['name']}, process {gpu['process']})",
                    )
                )
        elif key == "outputs":
            rows.append(("plot", value["plot"]))
            rows.append(("model card", value["model_card"]))
            if value["checkpoints"]:
                rows.append(("checkpoints", ", ".join(Path(p).name for p in value["checkpoints"])))
        elif key == "next":
            continue  # printed under the table, one command a line, easy to copy
        elif key == "replica_digests" or (key == "replicas_identical" and value is None):
            continue  # the digests are for machines; one process has no replicas to compare
        else:
            label = {"peak_cpu_rss_bytes": "peak CPU RSS"}.get(key, key.replace("_", " "))
            rows.append((label, format_value(key, value)))
    return rows


def summary_table(summary: dict):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="ossft: run summary", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # paths in full, folded if the terminal is narrow, never cut
    for label, value in table_rows(summary):
        table.add_row(label, value)
    commands = summary.get("next") or []
    if isinstance(commands, str):
        commands = [commands]
    lines = [Text("next:", style="bold")] + [Text(f"  {command}") for command in commands]
    return Group(table, *lines) if commands else table
