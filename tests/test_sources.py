"""sources.py: rows from files, folders, globs, save_to_disk folders and the Hub; sampling; fingerprints; splits."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ossft.data.sources import LoadedRows, SourceSpec, check_source, load_rows, source_fingerprint, split_validation
from ossft.errors import UserError

ROWS = [{"id": i, "text": f"row {i}"} for i in range(10)]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list) -> Path:
    from datasets import Dataset

    Dataset.from_list(rows).to_parquet(str(path))
    return path


def user_error(spec: SourceSpec, seed: int = 0) -> str:
    with pytest.raises(UserError) as info:
        load_rows(spec, seed)
    return str(info.value)


def load(path: Path | str, **spec) -> LoadedRows:
    loaded = load_rows(SourceSpec(str(path), **spec), seed=0)
    assert loaded.source == str(path)
    assert source_fingerprint(SourceSpec(str(path), **spec)) == loaded.fingerprint
    return loaded


# ---------------------------------------------------------------------------------------------
# One file of each type


def test_jsonl_rows_in_order_blank_lines_skipped_and_non_dict_rows_kept(tmp_path):
    # U+2028 is legal unescaped inside a JSON string; it must not split the line.
    text = '{"a": 1}\n\n  \n[1, 2]\n"just text"\n{"a": "x\u2028y"}\n'
    path = tmp_path / "rows.jsonl"
    path.write_text(text, encoding="utf-8")
    loaded = load(path)
    assert loaded.rows == [{"a": 1}, [1, 2], "just text", {"a": "x\u2028y"}]
    assert loaded.indexes == [0, 1, 2, 3]


def test_jsonl_with_byte_order_mark_and_crlf(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n{"a": 2}\r\n')
    assert load(path).rows == [{"a": 1}, {"a": 2}]


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2,}\n', encoding="utf-8")
    message = user_error(SourceSpec(str(path)))
    assert message.startswith(f"{path} line 3: not valid JSON (Expecting property name enclosed in double quotes")
    assert "Each line of a .jsonl file is one JSON object." in message


def test_jsonl_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    assert user_error(SourceSpec(str(path))).startswith(f"{path} line 2: not UTF-8 text")


def test_jsonl_rows_of_differing_shapes_stay_as_written(tmp_path):
    rows = [{"a": 1}, {"b": [1, "two", None]}, {"a": {"nested": True}}]
    assert load(write_jsonl(tmp_path / "mixed.jsonl", rows)).rows == rows


def test_json_list(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(ROWS[:3]), encoding="utf-8")
    assert load(path).rows == ROWS[:3]


def test_json_object_with_one_list_of_rows(tmp_path):
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"version": 2, "meta": {"n": 2}, "data": ROWS[:2]}), encoding="utf-8")
    loaded = load(path)
    assert loaded.rows == ROWS[:2]
    assert loaded.indexes == [0, 1]


@pytest.mark.parametrize(
    ("doc", "detail"),
    [
        ({"train": [], "test": []}, "the top-level object is not, it has 2 (train, test)."),
        ({"rows": 3}, "the top-level object is not, it has none."),
        ("text", "not a str."),
    ],
)
def test_json_without_one_list_of_rows(tmp_path, doc, detail):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    message = user_error(SourceSpec(str(path)))
    assert message.startswith(f"{path}: a .json dataset must be a list of rows, or an object with exactly one list")
    assert detail in message


def test_invalid_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"a": 1},\n{"a": ]', encoding="utf-8")
    assert user_error(SourceSpec(str(path))) == f"{path}: not valid JSON (Expecting value, line 2)."


def test_parquet_rows_with_nested_values(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "n": 1},
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], "n": 2},
    ]
    assert load(write_parquet(tmp_path / "rows.parquet", rows)).rows == rows


def test_csv_values_stay_strings_as_read(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text('question,answer,score\n"Hello, you",NA,007\nEmpty?,,3.50\n', encoding="utf-8")
    assert load(path).rows == [
        {"question": "Hello, you", "answer": "NA", "score": "007"},
        {"question": "Empty?", "answer": "", "score": "3.50"},
    ]


def test_unreadable_csv_and_parquet_are_user_errors(tmp_path):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text('a,b\n"unclosed,1\n', encoding="utf-8")
    assert user_error(SourceSpec(str(csv_path))).startswith(f"{csv_path}: could not be read as CSV (ParserError: ")
    parquet_path = tmp_path / "bad.parquet"
    parquet_path.write_bytes(b"not parquet at all")
    assert user_error(SourceSpec(str(parquet_path))).startswith(f"{parquet_path}: could not be read as PARQUET (")


def test_empty_datasets_are_not_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    (tmp_path / "empty.json").write_text("[]", encoding="utf-8")
    (tmp_path / "header_only.csv").write_text("a,b\n", encoding="utf-8")
    (tmp_path / "nothing.csv").write_text("", encoding="utf-8")
    from datasets import Dataset

    Dataset.from_dict({"a": []}).to_parquet(str(tmp_path / "empty.parquet"))
    for name in ["empty.jsonl", "empty.json", "header_only.csv", "nothing.csv", "empty.parquet"]:
        loaded = load(tmp_path / name)
        assert (loaded.rows, loaded.indexes) == ([], []), name
    assert load(tmp_path / "empty.jsonl", sample=0.5).rows == []


def test_unknown_extension(tmp_path):
    path = tmp_path / "rows.txt"
    path.write_text("hello\n", encoding="utf-8")
    assert user_error(SourceSpec(str(path))) == (
        f"{path}: unsupported file type '.txt'. Supported: .jsonl, .json, .parquet, .csv "
        "(rename the file, or convert it to one of these)."
    )


def test_missing_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert user_error(SourceSpec("data/nope.jsonl")) == (
        f"dataset not found: data/nope.jsonl. Check data.datasets[].path in the recipe "
        f"(paths are relative to the current folder, {tmp_path}; Hub datasets are named owner/name)."
    )


def test_existing_file_with_glob_characters_in_its_name(tmp_path):
    path = write_jsonl(tmp_path / "rows[1].jsonl", ROWS[:1])
    assert load(path).rows == ROWS[:1]


# ---------------------------------------------------------------------------------------------
# Folders and globs


def test_folder_of_mixed_files_sorted_and_concatenated(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "b.jsonl", ROWS[2:4])
    (folder / "a.json").write_text(json.dumps(ROWS[0:2]), encoding="utf-8")
    write_parquet(folder / "c.parquet", ROWS[4:6])
    (folder / "d.csv").write_text("id,text\n6,row 6\n", encoding="utf-8")
    (folder / "README.md").write_text("not data", encoding="utf-8")
    write_jsonl(folder / "._b.jsonl", [{"hidden": True}])
    (folder / "sub").mkdir()
    write_jsonl(folder / "sub" / "deeper.jsonl", [{"deeper": True}])
    loaded = load(folder)
    assert loaded.rows == ROWS[0:6] + [{"id": "6", "text": "row 6"}]
    assert loaded.indexes == list(range(7))


def test_folder_without_data_files(tmp_path):
    (tmp_path / "notes.md").write_text("x", encoding="utf-8")
    assert user_error(SourceSpec(str(tmp_path))).startswith(
        f"{tmp_path}: the folder holds no .jsonl, .json, .parquet, .csv file (subfolders are not searched)."
    )


def test_glob_reads_matching_files_sorted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("data").mkdir()
    write_jsonl(Path("data/part-2.jsonl"), ROWS[4:6])
    write_jsonl(Path("data/part-10.jsonl"), ROWS[0:2])  # sorted as text: part-10 before part-2
    write_jsonl(Path("data/other.jsonl"), ROWS[8:])
    loaded = load("data/part-*.jsonl")
    assert loaded.rows == ROWS[0:2] + ROWS[4:6]
    assert loaded.indexes == [0, 1, 2, 3]


def test_glob_without_match(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert user_error(SourceSpec("data/*.jsonl")) == (
        f"data/*.jsonl: it matches nothing. Check the pattern in data.datasets[].path "
        f"(relative to the current folder, {tmp_path})."
    )
    Path("data").mkdir()
    Path("data/notes.txt").write_text("x", encoding="utf-8")
    assert user_error(SourceSpec("data/*")).startswith(
        "data/*: it matches 1 paths, none a .jsonl, .json, .parquet, .csv file."
    )


# ---------------------------------------------------------------------------------------------
# datasets.save_to_disk folders


def test_save_to_disk_dataset(tmp_path):
    from datasets import Dataset

    Dataset.from_list(ROWS[:4]).save_to_disk(str(tmp_path / "saved"))
    loaded = load(tmp_path / "saved")
    assert loaded.rows == ROWS[:4]
    assert loaded.indexes == [0, 1, 2, 3]


def test_save_to_disk_dataset_dict_takes_the_split(tmp_path):
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "saved_dict"
    DatasetDict(train=Dataset.from_list(ROWS[:5]), test=Dataset.from_list(ROWS[5:7])).save_to_disk(str(folder))
    assert load(folder).rows == ROWS[:5]
    assert load(folder, split="test").rows == ROWS[5:7]
    assert source_fingerprint(SourceSpec(str(folder))) != source_fingerprint(SourceSpec(str(folder), split="test"))
    assert user_error(SourceSpec(str(folder), split="validation")) == (
        f"{folder}: no split 'validation' in this DatasetDict folder; it has train, test. "
        "Set data.datasets[].split to one of them."
    )


def test_save_to_disk_fingerprint_follows_the_content(tmp_path):
    from datasets import Dataset

    folder = tmp_path / "saved"
    Dataset.from_list(ROWS[:3]).save_to_disk(str(folder))
    before = source_fingerprint(SourceSpec(str(folder)))
    assert load(folder).fingerprint == before
    Dataset.from_list(ROWS[3:6]).save_to_disk(str(folder))
    assert source_fingerprint(SourceSpec(str(folder))) != before
    assert load(folder).rows == ROWS[3:6]


# ---------------------------------------------------------------------------------------------
# The Hub


def test_hub_id_not_in_the_offline_cache(tmp_path, monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    # Both libraries read these at import time, so the environment alone may come too late.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    connections: list = []

    def refuse(sock, address):
        connections.append(address)
        raise OSError("tests never touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.chdir(tmp_path)
    spec = SourceSpec("ossft-tests/no-such-dataset")
    message = user_error(spec)
    assert message.startswith(
        f"dataset not found: ossft-tests/no-such-dataset is neither a local path (relative to {tmp_path}) "
        "nor in the offline Hugging Face cache ("
    )
    assert "Download it on a machine with network" in message and "or give a local path." in message
    with pytest.raises(UserError) as info:
        source_fingerprint(spec)
    assert str(info.value) == message
    assert connections == []


# ---------------------------------------------------------------------------------------------
# Sampling


@pytest.mark.parametrize(("sample", "size"), [(0.3, 3), (0.04, 1), (0.999, 10), (4, 4), (10, 10)])
def test_sample_keeps_a_seeded_subset_in_the_original_order(tmp_path, sample, size):
    spec = SourceSpec(str(write_jsonl(tmp_path / "rows.jsonl", ROWS)), sample=sample)
    first, again = load_rows(spec, seed=7), load_rows(spec, seed=7)
    assert first == again
    assert len(first.rows) == len(first.indexes) == size
    assert first.indexes == sorted(set(first.indexes))
    assert first.rows == [ROWS[i] for i in first.indexes]
    assert first.fingerprint == source_fingerprint(spec)


def test_sample_depends_on_the_seed(tmp_path):
    spec = SourceSpec(str(write_jsonl(tmp_path / "rows.jsonl", ROWS)), sample=5)
    chosen = {tuple(load_rows(spec, seed).indexes) for seed in range(20)}
    assert len(chosen) > 1


def test_sample_over_a_folder_carries_indexes_across_files(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ROWS[:5])
    write_jsonl(tmp_path / "b.jsonl", ROWS[5:])
    loaded = load_rows(SourceSpec(str(tmp_path), sample=0.5), seed=3)
    assert len(loaded.rows) == 5
    assert loaded.rows == [ROWS[i] for i in loaded.indexes]


def test_sample_larger_than_the_dataset(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    assert user_error(SourceSpec(str(path), sample=11)) == (
        f"{path}: sample: 11 asks for 11 rows, but the dataset has 10 rows. "
        "Lower data.datasets[].sample, or give a fraction such as 0.5."
    )


@pytest.mark.parametrize("sample", [0, 1.0, 1.5, -3, 0.0, True, "10"])
def test_sample_that_is_neither_fraction_nor_count(tmp_path, sample):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    assert user_error(SourceSpec(str(path), sample=sample)) == (
        f"sample: {sample!r} is neither a fraction between 0 and 1 (exclusive) nor a whole count of rows >= 1. "
        "Write e.g. sample: 0.1 or sample: 500."
    )


# ---------------------------------------------------------------------------------------------
# Fingerprints


def test_fingerprint_changes_with_the_bytes_and_not_on_a_re_read(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    spec = SourceSpec(str(path))
    first = load_rows(spec, seed=0).fingerprint
    assert len(first) == 64
    assert load_rows(spec, seed=1).fingerprint == first
    assert source_fingerprint(spec) == first
    write_jsonl(path, ROWS[:9] + [{"id": 9, "text": "row 9!"}])
    changed = source_fingerprint(spec)
    assert changed != first
    assert load_rows(spec, seed=0).fingerprint == changed
    write_jsonl(path, ROWS)
    assert source_fingerprint(spec) == first


def test_fingerprint_covers_split_name_and_sample(tmp_path):
    path = str(write_jsonl(tmp_path / "rows.jsonl", ROWS))
    prints = {
        source_fingerprint(spec)
        for spec in [
            SourceSpec(path),
            SourceSpec(path, split="test"),
            SourceSpec(path, name="default"),
            SourceSpec(path, sample=0.5),
            SourceSpec(path, sample=5),
        ]
    }
    assert len(prints) == 5


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_fingerprint_of_arrow_read_files_follows_their_bytes(tmp_path, suffix):
    path = tmp_path / f"rows{suffix}"

    def write(rows):
        if suffix == ".parquet":
            write_parquet(path, rows)
        else:
            path.write_text("id,text\n" + "".join(f"{r['id']},{r['text']}\n" for r in rows), encoding="utf-8")

    write(ROWS[:3])
    before = load(path)
    write(ROWS[:2] + [{"id": 2, "text": "changed"}])
    after = load(path)
    assert after.fingerprint != before.fingerprint
    assert str(after.rows[2]["text"]) == "changed"  # not a stale copy from a cache keyed on the path


def test_folder_fingerprint_changes_when_a_file_is_added(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ROWS[:2])
    before = source_fingerprint(SourceSpec(str(tmp_path)))
    write_jsonl(tmp_path / "b.jsonl", ROWS[2:3])
    assert source_fingerprint(SourceSpec(str(tmp_path))) != before


# ---------------------------------------------------------------------------------------------
# Train / validation split


@pytest.mark.parametrize(
    ("n_rows", "size", "n_eval"), [(10, 0.2, 2), (10, 3, 3), (10, 0.01, 1), (7, 0.5, 4), (2, 1, 1)]
)
def test_split_validation_sizes_disjoint_and_complete(n_rows, size, n_eval):
    train, evaluation = split_validation(n_rows, size, seed=42)
    assert len(evaluation) == n_eval
    assert sorted(train + evaluation) == list(range(n_rows))
    assert not set(train) & set(evaluation)
    assert train == sorted(train) and evaluation == sorted(evaluation)
    assert split_validation(n_rows, size, seed=42) == (train, evaluation)


def test_split_validation_zero_means_no_evaluation():
    assert split_validation(5, 0, seed=1) == ([0, 1, 2, 3, 4], [])
    assert split_validation(5, 0.0, seed=1) == ([0, 1, 2, 3, 4], [])
    assert split_validation(0, 0, seed=1) == ([], [])


def test_split_validation_depends_on_the_seed():
    assert len({tuple(split_validation(100, 10, seed)[1]) for seed in range(5)}) > 1


def test_split_validation_refuses_more_rows_than_exist():
    with pytest.raises(UserError) as info:
        split_validation(10, 11, seed=0)
    assert str(info.value) == (
        "val_set_size 11 asks for 11 evaluation rows, but the datasets hold 10 rows. "
        "Lower val_set_size, or give a fraction such as 0.05."
    )


@pytest.mark.parametrize(("n_rows", "size"), [(10, 10), (2, 0.9), (1, 0.5)])
def test_split_validation_refuses_to_leave_no_training_row(n_rows, size):
    with pytest.raises(UserError) as info:
        split_validation(n_rows, size, seed=0)
    assert str(info.value) == (
        f"val_set_size {size} takes all {n_rows} rows for evaluation and leaves none to train on. "
        "Lower val_set_size, or set it to 0 for no evaluation."
    )


@pytest.mark.parametrize("size", [-1, 1.0, 2.5, True])
def test_split_validation_refuses_values_that_are_neither_fraction_nor_count(size):
    with pytest.raises(UserError, match=r"^val_set_size: .* is neither a fraction between 0 and 1"):
        split_validation(10, size, seed=0)


# ---------------------------------------------------------------------------------------------


def test_import_is_cheap():
    code = "import sys, ossft.data.sources; print('datasets' in sys.modules, 'pyarrow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_check_source_finds_the_source_without_reading_a_row(tmp_path, monkeypatch):
    # Cheap enough for `ossft validate`: an existing file passes even when its rows would not parse.
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n", encoding="utf-8")
    assert check_source(SourceSpec(str(broken))) is None
    monkeypatch.chdir(tmp_path)
    for path in ("data/nope.jsonl", "data/*.jsonl"):
        with pytest.raises(UserError) as info:
            check_source(SourceSpec(path))
        assert str(info.value) == user_error(SourceSpec(path))
