"""Commands that turn a trained output into another: merge-lora, merge-shards, export (MXFP4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from ossft.cli.console import byte_progress, console, note, user_errors
from ossft.errors import UserError


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
    from rich.table import Table

    from ossft.convert.export import export_mxfp4

    if not mxfp4:
        raise UserError("export: say which format to write; --mxfp4 is the one ossft writes.")
    with byte_progress("quantizing experts") as on_progress:
        report = export_mxfp4(model_dir, out, on_progress=on_progress)
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


@user_errors
def merge_lora(
    adapter_dir: Annotated[
        Path, typer.Argument(help="A LoRA adapter folder (ossft train's output).", show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to write (must not exist or be empty).")],
    base: Annotated[str | None, typer.Option(help="Base model; default: the one in adapter_config.json.")] = None,
    dtype: Annotated[
        Literal["bfloat16", "float32"], typer.Option(help="dtype of dequantized MXFP4 experts.")
    ] = "bfloat16",
):
    """Merge attention and expert LoRA into the base weights, one shard at a time, and check the result.

    Example: ossft merge-lora outputs/quickstart --out outputs/quickstart-merged
    """
    from ossft.convert.merge_lora import merge_lora as run_merge

    with byte_progress("merging") as on_progress:
        report = run_merge(adapter_dir, out, base=base, on_progress=on_progress, dtype=dtype)
    console.print(
        f"merged LoRA into {len(report.merged_tensors)} of {report.tensors} tensors; wrote and read back "
        f"{report.shards} shard(s) in [bold]{report.out_dir}[/] ({report.seconds:.1f} s). "
        f"Next: ossft generate {report.out_dir}, or ossft export {report.out_dir} --mxfp4 --out DIR"
    )


@user_errors
def merge_shards(
    source: Annotated[
        Path, typer.Argument(help="An FSDP run's output folder, or one of its checkpoint-N.", show_default=False)
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder to write (must not exist or be empty); default: merged/.")
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            help="bf16, fp16 or fp32, or 'saved' to keep each tensor's dtype; default: bf16 for a model (what is "
            "served; FSDP2 saves fp32), as saved for a LoRA adapter."
        ),
    ] = None,
    max_shard_size: Annotated[str, typer.Option(help="Largest weight file: 5GB, 2GiB, 500MB, or bytes.")] = "5GiB",
    base: Annotated[
        str | None, typer.Option(help="Base model, for the config; default: model.base_model of the run's recipe.")
    ] = None,
):
    """Turn an FSDP sharded save (.distcp files) into a Hugging Face model or LoRA adapter, one shard at a time.

    Reads the run's final save, or else its newest checkpoint-N.

    Example: ossft merge-shards outputs/gpt-oss-20b-full --out outputs/gpt-oss-20b-full-hf
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
        f"({report.bytes / 2**20:,.1f} MiB, {_dtype_words(report)}) in {report.shards} file(s) in [bold]{report.out_dir}[/] "
        f"({report.seconds:.1f} s). Next: {after}"
    )
    if report.tokenizer_from is None:
        note("no tokenizer found beside the save nor with the base model; none was copied.")


def _dtype_words(report) -> str:
    if report.dtype == report.saved_dtype:
        return f"{report.dtype} as saved"
    return f"{report.dtype}, cast from the saved {report.saved_dtype}; --dtype saved keeps it"
