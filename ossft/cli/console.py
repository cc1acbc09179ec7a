"""What every command shares for its output: the consoles, the status line, progress bars, and
`user_errors`, which turns a UserError into one short message and its exit code."""

from __future__ import annotations

import contextlib
import functools
import os

import typer
from rich.console import Console
from rich.markup import escape

from ossft.errors import UserError

# Soft wrap: a message is never broken inside a path or a command, so it can be copied as printed
# (rich otherwise wraps at 80 columns when the output is not a terminal). Tables still fit the width.
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)
state = {"debug": False}  # set by the --debug callback, before any command runs


def user_errors(command):
    """User mistakes -> one short message and exit code 2; with --debug, the traceback too."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            from ossft.launch.ranks import rank_label, report_rank_failure

            report_rank_failure(exc.exit_code)
            if state["debug"]:
                raise
            # Escaped: a message quotes the user's data, and a row holding "[/]" is not rich markup.
            errors.print(f"[bold red]error:[/] {escape(rank_label() + str(exc))}", highlight=False)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def status(line: str) -> None:
    """Progress lines come from rank 0 only; errors come from every rank (see user_errors)."""
    if os.environ.get("RANK", "0") == "0":
        console.print(f"[cyan]ossft[/] {line}")


def warn(message: str) -> None:
    errors.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)


def note(message: str) -> None:
    errors.print(f"[yellow]note:[/] {escape(message)}", highlight=False)


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
