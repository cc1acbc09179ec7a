"""loss.png: train loss, eval loss and learning rate against step, drawn from a Trainer's log history.

Drawn with matplotlib's Agg canvas directly, never through pyplot: no display is needed, and the
global backend of whoever imports ossft (a notebook, say) is left alone.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from ossft.checkpoints.layout import CHECKPOINT, PLOT_FILE, TRAINER_STATE
from ossft.errors import UserError
from ossft.files import write_bytes_atomic

TRAIN_COLOR, EVAL_COLOR, LR_COLOR = "#1f77b4", "#d62728", "#7f7f7f"


@dataclass
class Series:
    train_steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    lr_steps: list[int] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)


def series(log_history: list[dict]) -> Series:
    """The curves in a Trainer's `log_history` (train entries carry `loss`, eval entries `eval_loss`)."""
    out = Series()
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        if "loss" in entry:
            out.train_steps.append(step)
            out.train_loss.append(entry["loss"])
        if "eval_loss" in entry:
            out.eval_steps.append(step)
            out.eval_loss.append(entry["eval_loss"])
        if "learning_rate" in entry:
            out.lr_steps.append(step)
            out.learning_rate.append(entry["learning_rate"])
    return out


def render_png(log_history: list[dict], title: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    curves = series(log_history)
    # 9 x 5 inches at 100 dpi: 900 x 500 pixels, 11-point text stays legible in a README or a terminal viewer.
    figure = Figure(figsize=(9, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    loss_axis = figure.add_subplot()
    # Markers only while there are few points: a long run's line would drown in them.
    marker = "o" if len(curves.train_steps) <= 40 else None
    lines = []
    if curves.train_loss:
        lines += loss_axis.plot(
            curves.train_steps, curves.train_loss, color=TRAIN_COLOR, marker=marker, markersize=4, label="train loss"
        )
    if curves.eval_loss:
        lines += loss_axis.plot(
            curves.eval_steps, curves.eval_loss, color=EVAL_COLOR, marker="s", markersize=6, label="eval loss"
        )
    loss_axis.set_xlabel("step", fontsize=11)
    loss_axis.set_ylabel("loss", fontsize=11)
    loss_axis.grid(True, alpha=0.3)
    loss_axis.tick_params(labelsize=10)
    if curves.learning_rate:
        lr_axis = loss_axis.twinx()
        lines += lr_axis.plot(
            curves.lr_steps, curves.learning_rate, color=LR_COLOR, linestyle="--", linewidth=1.2, label="learning rate"
        )
        lr_axis.set_ylabel("learning rate", fontsize=11, color=LR_COLOR)
        lr_axis.tick_params(labelsize=10, colors=LR_COLOR)
        lr_axis.set_ylim(bottom=0)
        # Plain tick labels (0.0002, 3e-05): matplotlib's shared "1e-3" offset sits in the title's corner.
        lr_axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.2g}"))
    if lines:
        # Below the axes, not inside: inside, it hides the curves whichever corner it takes.
        figure.legend(
            lines, [line.get_label() for line in lines], loc="outside lower center", ncols=len(lines), fontsize=10
        )
    else:
        loss_axis.text(0.5, 0.5, "no loss logged yet", ha="center", va="center", transform=loss_axis.transAxes)
    loss_axis.set_title(title, fontsize=13)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def plot_title(output_dir: Path, log_history: list[dict]) -> str:
    steps = max((entry.get("step", 0) for entry in log_history), default=0)
    return f"{output_dir.resolve().name}: loss and learning rate ({steps:,} steps)"


def write_loss_plot(log_history: list[dict], output_dir: str | Path) -> Path:
    output_dir = Path(output_dir)
    return write_bytes_atomic(output_dir / PLOT_FILE, render_png(log_history, plot_title(output_dir, log_history)))


def newest_trainer_state(output_dir: str | Path) -> Path:
    """The output folder's trainer_state.json (written at the end), else the highest checkpoint-N's."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise UserError(f"{output_dir} is not a folder. Pass the output folder of `ossft train`.")
    final = output_dir / TRAINER_STATE
    if final.is_file():
        return final
    checkpoints = [
        (int(match.group(1)), path / TRAINER_STATE)
        for path in output_dir.iterdir()
        if (match := CHECKPOINT.fullmatch(path.name)) and (path / TRAINER_STATE).is_file()
    ]
    if not checkpoints:
        raise UserError(
            f"{output_dir} holds no {TRAINER_STATE}, neither its own nor in a checkpoint-N folder: "
            "it is written at the first checkpoint and at the end of `ossft train`."
        )
    return max(checkpoints)[1]


def redraw(output_dir: str | Path) -> tuple[Path, Path]:
    """`ossft plot`: loss.png again from the newest trainer_state.json; returns (plot, state used)."""
    state_path = newest_trainer_state(output_dir)
    try:
        history = json.loads(state_path.read_text(encoding="utf-8"))["log_history"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{state_path} is not a Trainer state file (no readable log_history): {exc}") from exc
    return write_loss_plot(history, output_dir), state_path
