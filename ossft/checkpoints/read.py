"""Finding and reading a saved model folder, every file checked where it is opened, so that a damaged
folder is a UserError naming the file, never a SafetensorError or JSONDecodeError from deep inside a load."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from ossft.checkpoints.layout import ADAPTER_WEIGHTS, FSDP_MODEL_FOLDER, INDEX, SINGLE_FILE
from ossft.errors import UserError


def refuse_sharded_save(folder: Path) -> None:
    """An FSDP run (SHARDED_STATE_DICT) leaves its weights only as DCP shards, one file per rank, which
    no loader reads: say so, and how to make the folder loadable, instead of failing deep in a load."""
    loadable = (INDEX, SINGLE_FILE, ADAPTER_WEIGHTS, "adapter_model.bin", "pytorch_model.bin")
    if (folder / FSDP_MODEL_FOLDER).is_dir() and not any((folder / name).is_file() for name in loadable):
        raise UserError(
            f"{folder} holds only an FSDP sharded save ({FSDP_MODEL_FOLDER}/, one file per rank), which no "
            f"model loader reads. Turn it into a model or adapter folder first: ossft merge-shards {folder} "
            f"(it writes {folder / 'merged'}), then use that folder."
        )


def local_model_folder(name: str) -> Path | None:
    """A local folder, or a Hub id already in the local cache (never the network: merges and exports
    run where training ran). None when neither: the caller says what to do."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not cached, or not a valid id
        return None


# UserError naming the file, never a SafetensorError or JSONDecodeError from deep inside a load.

COPY_AGAIN = "Copy or download the model folder again, or save it again."


def read_json_object(path: Path, fix: str = COPY_AGAIN) -> dict:
    """The JSON object in `path`, or a UserError saying what is wrong with the file and `fix`."""
    try:
        text = path.read_bytes()
        doc = json.loads(text)
    except FileNotFoundError:
        raise UserError(f"{path} is missing. {fix}") from None
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({exc.strerror}). {fix}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text, so not JSON: the file is damaged. {fix}") from None
    except json.JSONDecodeError as exc:
        what = "empty" if not text.strip() else f"not valid JSON ({exc.msg}: line {exc.lineno}, column {exc.colno})"
        raise UserError(f"{path} is {what}: the file is damaged. {fix}") from None
    except (ValueError, RecursionError) as exc:  # a number or a nesting Python's reader refuses
        raise UserError(f"{path} cannot be read as JSON ({type(exc).__name__}): the file is damaged. {fix}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path} holds a JSON {type(doc).__name__}, not an object: the file is damaged. {fix}")
    return doc


def safetensors_header(file: Path, fix: str = COPY_AGAIN) -> dict[str, dict]:
    """A safetensors file's tensors (name -> dtype, shape, data_offsets), checked against the file's size:
    a file cut short anywhere, in its header or its data, is found before any tensor is read."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise _Damaged("empty" if size == 0 else f"truncated: {size} bytes, not even the header's length")
            (length,) = struct.unpack("<Q", head)
            if 8 + length > size:
                raise _Damaged(f"truncated in its header: the header needs {8 + length:,} bytes, the file has {size:,}")
            header = json.loads(handle.read(length))
        if not isinstance(header, dict):
            raise _Damaged("not a safetensors file: its header is not a JSON object")
        header.pop("__metadata__", None)
        ends = [_data_end(name, entry) for name, entry in header.items()]
        if 8 + length + max(ends, default=0) != size:
            needed = 8 + length + max(ends, default=0)
            cut = "truncated in its data" if needed > size else "longer than its header says"
            raise _Damaged(f"{cut}: its header says the tensors end at byte {needed:,}, the file has {size:,} bytes")
    except FileNotFoundError:
        raise UserError(f"{file} is missing. {fix}") from None
    except OSError as exc:
        raise UserError(f"{file} cannot be read ({exc.strerror}). {fix}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{file} is not a safetensors file: its header is not valid JSON. {fix}") from None
    except _Damaged as exc:
        raise UserError(f"{file} is {exc}. {fix}") from None
    return header


class _Damaged(Exception):
    pass


def _data_end(name: str, entry: object) -> int:
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise _Damaged(f"not a safetensors file: its header entry for {name} has no data_offsets")
    return offsets[1]


def check_model_folder(folder: Path, fix: str = COPY_AGAIN) -> dict:
    """config.json of a model folder, and its safetensors weights checked whole (see `model_weights`);
    other weights (pytorch_model.bin) are left to the loader."""
    config = read_json_object(folder / "config.json", fix)
    if (folder / INDEX).is_file() or (folder / SINGLE_FILE).is_file():
        model_weights(folder, fix)
    return config


def model_weights(folder: Path, fix: str = COPY_AGAIN) -> dict[Path, dict[str, dict]]:
    """Each weight file of a model folder and its tensors (as `safetensors_header` gives them), in the
    index's order; every file checked whole, and the index checked against what the files hold."""
    index = folder / INDEX
    if index.is_file():
        weight_map = read_json_object(index, fix).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise UserError(f"{index} has no weight_map of tensor names to files: the file is damaged. {fix}")
        files = [folder / name for name in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise UserError(
                f"{folder} is incomplete: {INDEX} names {', '.join(missing[:3])}"
                f"{f' and {len(missing) - 3} more' if len(missing) > 3 else ''}, which "
                f"{'is' if len(missing) == 1 else 'are'} not there. Copy or download the missing shards."
            )
    elif (folder / SINGLE_FILE).is_file():
        weight_map, files = None, [folder / SINGLE_FILE]
    else:
        raise UserError(
            f"{folder} holds no safetensors weights (model.safetensors or {INDEX}). "
            "Pass a model folder saved with safetensors (the default of save_pretrained)."
        )
    headers = {file: safetensors_header(file, fix) for file in files}
    if weight_map is not None:
        _check_index(index, weight_map, headers)
    return headers


def _check_index(index: Path, weight_map: dict[str, str], headers: dict[Path, dict]) -> None:
    """The index and the files must agree. transformers 5 goes by the files and loads such a folder
    anyway, but other readers go by the index, and ossft writes none that disagree: a mismatch means
    the folder mixes two saves (a shard copied from another run), so none of it can be trusted."""
    holder = {name: file.name for file, header in headers.items() for name in header}
    wrong = [name for name, file in weight_map.items() if holder.get(name) != file]
    if wrong:
        name = wrong[0]
        where = f"it is in {holder[name]}" if name in holder else "no weight file holds it"
        raise UserError(
            f"{index} does not match the weight files: it puts {name} in {weight_map[name]}, but {where}"
            f"{f' ({len(wrong)} such tensors)' if len(wrong) > 1 else ''}. The index and the files come from "
            f"different saves. {COPY_AGAIN}"
        )
    unlisted = [name for name in holder if name not in weight_map]
    if unlisted:
        raise UserError(
            f"{index} does not match the weight files: {unlisted[0]} in {holder[unlisted[0]]} is not in its "
            f"weight_map{f' ({len(unlisted)} such tensors)' if len(unlisted) > 1 else ''}. The index and the files "
            f"come from different saves. {COPY_AGAIN}"
        )
