"""What a run leaves for people: summary.json and the table printed at the end."""

from __future__ import annotations

from pathlib import Path

from ossft.files import write_json_atomic

SUMMARY_FILE = "summary.json"


def summarize(run) -> dict:
    state = run.trainer.state
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    output = run.output_dir
    adapter = (output / "adapter_config.json").is_file()
    return {
        "output_dir": str(output),
        "method": "lora" if adapter else "full",
        "steps": state.global_step,
        "epochs": round(state.epoch or 0.0, 3),
        "rows": run.data.stats.rows,
        "rows_skipped": run.data.stats.rows_skipped,
        "examples": run.data.stats.examples,
        "dropped_too_long": run.data.stats.dropped_too_long,
        "eval_examples": run.data.stats.eval_examples,
        "dataset_tokens": run.data.stats.tokens,
        "trained_tokens_per_epoch": run.data.stats.trained_tokens,
        "trainable_parameters": run.trainable_params,
        "total_parameters": run.total_params,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "best_loss": min(losses) if losses else None,
        "loss_drop": (1 - losses[-1] / losses[0]) if len(losses) > 1 and losses[0] else None,
        "wall_seconds": round(run.wall_seconds, 1),
        "next": f"ossft generate {output}"
        + (f"  |  ossft merge-lora {output} --out {output}-merged" if adapter else ""),
    }


def write_summary(summary: dict, output_dir: str | Path) -> Path:
    return write_json_atomic(Path(output_dir) / SUMMARY_FILE, summary)


def summary_table(summary: dict):
    from rich.table import Table

    table = Table(title="ossft: run summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4g}" if key != "loss_drop" else f"{100 * value:.1f}%"
        elif isinstance(value, int):
            value = f"{value:,}"
        table.add_row(key.replace("_", " "), str(value))
    return table
