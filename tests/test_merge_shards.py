"""merge-shards: real FSDP2 sharded saves (two gloo ranks) -> Hugging Face folders equal to the unsharded weights."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ossft.checkpoints.verify import saved_tensors
from ossft.convert.merge_shards import merge_shards

from .conftest import REPO
from .fsdp_checkpoint import RunSpec, expected_dir, write_fsdp_runs

pytestmark = pytest.mark.e2e  # every test reads the runs two FSDP processes save

# The wide model of the memory test: gpt-oss's shape at hidden 1024 with 8 experts and 4 layers, in bf16.
WIDE = {"hidden_size": 1024, "intermediate_size": 1024, "head_dim": 256, "num_local_experts": 8}
WIDE_LAYERS = 4


def _config_only_base(tiny: Path, out: Path, **changes) -> Path:
    """A base model folder with the tiny tokenizer and a changed config.json, and no weights (merge reads none)."""
    out.mkdir(parents=True)
    config = json.loads((tiny / "config.json").read_text())
    layers = changes.get("num_hidden_layers", config["num_hidden_layers"])
    config.update(changes, layer_types=["sliding_attention", "full_attention"] * (layers // 2))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy2(tiny / name, out)
    return out


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Four runs saved by one pair of ranks: checkpoint-9 and -10 are there so that a name sort (9 > 10) and a
    number sort (10 > 9) pick different ones."""
    root = tmp_path_factory.mktemp("runs")
    wide_base = _config_only_base(tiny_model_dir, root / "wide-base", **WIDE, num_hidden_layers=WIDE_LAYERS)
    tiny = str(tiny_model_dir)
    specs = {
        "full": RunSpec(str(root / "full"), tiny, {"checkpoint-9": 9, "checkpoint-10": 10, ".": 1}),
        "lora": RunSpec(str(root / "lora"), tiny, {"checkpoint-5": 5, ".": 2}, lora=True),
        "lora-whole": RunSpec(str(root / "lora-whole"), tiny, {".": 3}, lora=True, whole_peft_model=True),
        "wide": RunSpec(str(root / "wide"), str(wide_base), {".": 0}, dtype="bfloat16", expected=False),
    }
    write_fsdp_runs(list(specs.values()))
    return {name: Path(spec.run_dir) for name, spec in specs.items()}


def _copy_run(run: Path, to: Path, without: tuple[str, ...] = ()) -> Path:
    """A copy of a run folder, minus the paths in `without` (relative to it)."""
    shutil.copytree(run, to)
    for path in without:
        target = to / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return to


def _flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _assert_same_tensors(found: dict, expected: dict, dtype=None) -> None:
    assert sorted(found) == sorted(expected)
    for name, tensor in expected.items():
        wanted = tensor if dtype is None else tensor.to(dtype)
        assert found[name].dtype == wanted.dtype and torch.equal(found[name], wanted), name


def _loads_cleanly(folder: Path):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model


def test_final_save_is_merged_exactly_and_loads(cli, runs, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "hf"
    result = cli("merge-shards", runs["full"], "--out", out)

    assert result.exit_code == 0, result.stderr
    assert f"saved in {runs['full']}: 37 tensors" in _flat(result.stdout)  # the final save, not a checkpoint
    # bf16 by default, what is served: the fp32 save is cast, and the command says so.
    assert "MiB, bfloat16, cast from the saved float32; --dtype saved keeps it)" in _flat(result.stdout)
    expected = load_file(expected_dir(runs["full"], ".") / "model.safetensors")
    _assert_same_tensors(dict(saved_tensors(out)), expected, dtype=torch.bfloat16)
    base = load_file(tiny_model_dir / "model.safetensors")
    assert not any(torch.equal(expected[name], base[name]) for name in base)  # every weight moved in "training"
    assert _loads_cleanly(out).dtype == torch.bfloat16
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["GptOssForCausalLM"] and config["dtype"] == "bfloat16"
    assert AutoTokenizer.from_pretrained(out).convert_tokens_to_ids("<|return|>") == config["eos_token_id"]
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model-00001-of-00001.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert os.listdir(tmp_path) == ["hf"]  # no staging folder left


def test_newest_checkpoint_by_number_without_a_final_save(runs, tmp_path):
    run = _copy_run(runs["full"], tmp_path / "run", without=("pytorch_model_fsdp_0",))

    report = merge_shards(run, dtype="saved")  # no --out: merged/ beside the save; exactly as saved

    assert report.source == run / "checkpoint-10" and report.out_dir == run / "checkpoint-10" / "merged"
    expected = load_file(expected_dir(runs["full"], "checkpoint-10") / "model.safetensors")
    _assert_same_tensors(dict(saved_tensors(report.out_dir)), expected)
    older = merge_shards(run / "checkpoint-9", tmp_path / "nine", dtype="fp32")  # a checkpoint named is the one read
    nine = load_file(expected_dir(runs["full"], "checkpoint-9") / "model.safetensors")
    _assert_same_tensors(dict(saved_tensors(older.out_dir)), nine)
    assert not torch.equal(nine["lm_head.weight"], expected["lm_head.weight"])


def test_dtype_and_several_shards_with_an_index(runs, tmp_path):
    progress = []
    limit = 200_000  # the embedding (1045 x 64 in bf16, 134 kB) and lm_head fit; the expert stacks do too
    report = merge_shards(
        runs["full"], tmp_path / "hf", dtype="bf16", max_shard_size=limit, on_progress=lambda *a: progress.append(a)
    )

    folder = report.out_dir
    expected = load_file(expected_dir(runs["full"], ".") / "model.safetensors")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert report.shards == len(shards) > 2 and report.dtype == "bfloat16"
    assert shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    found = {}
    for shard in shards:
        state = load_file(folder / shard)
        assert sum(t.nbytes for t in state.values()) <= limit or len(state) == 1, shard
        assert all(index["weight_map"][name] == shard for name in state)
        found.update(state)
    _assert_same_tensors(found, expected, dtype=torch.bfloat16)
    total = sum(t.nbytes for t in found.values())
    assert index["metadata"]["total_size"] == report.bytes == total and sorted(index["weight_map"]) == sorted(found)
    assert progress[-1] == (total, total) and [p[0] for p in progress] == sorted(p[0] for p in progress)
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    assert _loads_cleanly(folder).dtype == torch.bfloat16


def test_a_config_beside_the_save_wins_and_is_cleaned(cli, runs, tiny_model_dir, tmp_path):
    """A config.json saved from the FSDP-wrapped model names FSDPGptOssForCausalLM (docs/traps.md#trap-9); one from
    an MXFP4 base keeps a quantization_config that no longer describes the dequantized weights (trap 1)."""
    from ossft.gptoss import mxfp4

    run = _copy_run(runs["full"], tmp_path / "run", without=("recipe.yaml",))  # so the base is unknown
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config.update(architectures=["FSDPGptOssForCausalLM"], quantization_config=mxfp4.QUANTIZATION_CONFIG)
    config["torch_dtype"] = config.pop("dtype")
    (run / "config.json").write_text(json.dumps(config))

    result = cli("merge-shards", run, "--out", tmp_path / "hf", "--dtype", "saved")

    assert result.exit_code == 0, result.stderr
    assert "MiB, float32 as saved)" in _flat(result.stdout)
    assert "no tokenizer found beside the save nor with the base model" in _flat(result.stderr)
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert written["architectures"] == ["GptOssForCausalLM"] and written["dtype"] == "float32"
    assert not {"quantization_config", "torch_dtype"} & set(written)
    assert written["hidden_size"] == config["hidden_size"] and _loads_cleanly(tmp_path / "hf")


# PeftModel.from_pretrained asks transformers for a deprecated property (peft 0.21.2, transformers 5.23).
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
@pytest.mark.parametrize("run", ["lora", "lora-whole"])
def test_lora_save_becomes_the_adapter_peft_writes(runs, tiny_model_dir, tmp_path, run):
    """The Trainer saves adapter tensors only; accelerator.save_state the whole PEFT model (`.default.` names and
    the frozen base): both must give PEFT's own adapter files, expert LoRA (target_parameters) included."""
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    report = merge_shards(runs[run], tmp_path / "adapter")

    folder, peft_own = report.out_dir, expected_dir(runs[run], ".")
    assert report.adapter and report.tensors == 24  # q/k/v/o and both expert stacks of 2 layers, A and B
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    expected = load_file(peft_own / "adapter_model.safetensors")
    assert any(".mlp.experts.base_layer.lora_A.weight" in name for name in expected)
    _assert_same_tensors(load_file(folder / "adapter_model.safetensors"), expected)
    ours, theirs = (json.loads((f / "adapter_config.json").read_text()) for f in (folder, peft_own))
    for config in (ours, theirs):  # a set in memory, written in hash order
        config["target_modules"] = sorted(config["target_modules"])
    assert ours == theirs and ours["base_model_name_or_path"] == str(tiny_model_dir)

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, folder)
    _assert_same_tensors(get_peft_model_state_dict(model), expected)
    again = model.load_adapter(folder, adapter_name="again")
    assert again.missing_keys == again.unexpected_keys == []


def test_peak_memory_follows_the_read_batch_not_the_model(runs, tmp_path):
    """The child's peak RSS (VmHWM) merging a ~230 MB model into one output file (the default 5 GiB shard) with
    16 MiB read batches, minus that of merging the tiny model (same imports, same code, tensors of a few hundred
    kB). What the merge may hold at once:
    - while loading: two batches, one being written and the next being read (each at most max(batch, largest
      tensor): a bigger tensor is read alone), plus one rank's chunk of a tensor, which DCP's torch.load reads
      whole before copying it in (< largest);
    - while reading back: one tensor, and the pages safe_open mapped for it (the file is reopened per tensor);
    so 2 max(batch, largest) + largest, plus 64 MiB for the allocator keeping freed blocks and page rounding.
    Here the largest tensor is an expert stack gate_up_proj, 8 x 1024 x 2048 bf16 = 32 MiB: 160 MiB in all,
    where holding the output file (as safetensors' save_file, or one safe_open handle, would) is 230 MB."""
    batch, largest = 16 * 2**20, 8 * 1024 * 2048 * 2
    model_bytes = sum((p.stat().st_size for p in (runs["wide"] / "pytorch_model_fsdp_0").glob("*.distcp")), start=0)
    assert 200e6 < model_bytes < 400e6

    wide = _peak_rss_of_merge(runs["wide"], tmp_path / "wide", read_batch=batch)
    baseline = _peak_rss_of_merge(runs["full"], tmp_path / "tiny", read_batch=batch)

    bound = 2 * max(batch, largest) + largest + 64 * 2**20
    growth = wide - baseline
    print(f"peak RSS: tiny {baseline / 2**20:.0f} MiB, wide {wide / 2**20:.0f} MiB, growth {growth / 2**20:.0f} MiB")
    assert growth < bound and growth < model_bytes / 2
    assert [p.name for p in (tmp_path / "wide").glob("*.safetensors")] == ["model-00001-of-00001.safetensors"]


_REPORT_PEAK = """
import atexit, sys
def report():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    print("PEAK_RSS_KB", peak, file=sys.stderr)
atexit.register(report)
import ossft.convert.merge_shards
ossft.convert.merge_shards.READ_BATCH = int(sys.argv.pop(1))
from ossft.cli import app
app(sys.argv[1:], prog_name="ossft")
"""


def _peak_rss_of_merge(source: Path, out: Path, *options: str, read_batch: int) -> int:
    """Bytes. VmHWM is the high-water mark of this process's own memory since its exec (getrusage would count
    the forked copy of pytest, before the exec, too)."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux's /proc")
    command = [sys.executable, "-c", _REPORT_PEAK, str(read_batch), "merge-shards", str(source), "--out", str(out)]
    done = subprocess.run([*command, *options], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0]) * 1024


def _truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty folder", r"empty holds no FSDP sharded save: no pytorch_model_fsdp_0/ in it nor in a checkpoint-N/"),
        ("missing .distcp", r"run/pytorch_model_fsdp_0 lacks __1_0\.distcp \(1 of 2 \.distcp files; each rank"),
        ("truncated .distcp", r"__0_0\.distcp is truncated: [\d,]+ bytes, the checkpoint's \.metadata needs [\d,]+"),
        ("interrupted save", r"run/checkpoint-10/pytorch_model_fsdp_0 has no \.metadata: the save was interrupted"),
        ("damaged .metadata", r"cannot read .*run/pytorch_model_fsdp_0/\.metadata \(.*\); the file is damaged"),
        (
            "narrower base",
            r"the save does not match the model in .*narrow/config\.json: model\.embed_tokens\.weight is "
            r"\[1045, 64\] in the save but \[1045, 32\] in the architecture\. It was trained from another model",
        ),
        (
            "deeper base",
            r"does not match the model in .*deep/config\.json: missing \['model\.layers\.2\..*\] \(\d+\), "
            r"unexpected \[\] \(0\)",
        ),
        ("no base known", r"no config\.json for .*run: FSDP sharded saves hold none, and .*run has no recipe\.yaml"),
        ("LoRA settings unknown", r"holds LoRA tensors, but there is no adapter_config\.json beside it and .* no "),
        ("--base missing", r"--base .*nowhere: no model folder with a config\.json there"),
        ("out not empty", r"parent/out already exists and is not empty\. Choose another --out folder"),
        ("bad --dtype", r"--dtype int8: expected bf16, fp16 or fp32"),
        ("bad --max-shard-size", r"--max-shard-size lots: expected a size such as 5GB"),
        ("not enough disk", r"not enough disk space in .*parent: the merged model needs 0\.0 GiB, 0\.0 GiB are free"),
    ],
)
def test_errors_exit_2_and_leave_nothing(case, message, cli, runs, tiny_model_dir, tmp_path, monkeypatch):
    parent = tmp_path / "parent"
    parent.mkdir()
    run = _copy_run(runs["lora" if case == "LoRA settings unknown" else "full"], tmp_path / "run")
    source, options = run, []
    if case == "empty folder":
        source = tmp_path / "empty"
        source.mkdir()
    elif case == "missing .distcp":
        (run / "pytorch_model_fsdp_0" / "__1_0.distcp").unlink()
    elif case == "truncated .distcp":
        _truncate(run / "pytorch_model_fsdp_0" / "__0_0.distcp")
    elif case == "interrupted save":
        shutil.rmtree(run / "pytorch_model_fsdp_0")
        (run / "checkpoint-10" / "pytorch_model_fsdp_0" / ".metadata").unlink()
    elif case == "damaged .metadata":
        _truncate(run / "pytorch_model_fsdp_0" / ".metadata")
    elif case == "narrower base":
        narrow = _config_only_base(tiny_model_dir, tmp_path / "narrow", hidden_size=32, intermediate_size=32)
        options = ["--base", narrow]
    elif case == "deeper base":
        options = ["--base", _config_only_base(tiny_model_dir, tmp_path / "deep", num_hidden_layers=4)]
    elif case == "no base known":
        (run / "recipe.yaml").unlink()
    elif case == "LoRA settings unknown":
        (run / "recipe.yaml").unlink()
        options = ["--base", tiny_model_dir]
    elif case == "--base missing":
        options = ["--base", tmp_path / "nowhere"]
    elif case == "out not empty":
        (parent / "out").mkdir()
        (parent / "out" / "keep.txt").write_text("mine")
    elif case == "bad --dtype":
        options = ["--dtype", "int8"]
    elif case == "bad --max-shard-size":
        options = ["--max-shard-size", "lots"]
    elif case == "not enough disk":
        monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, 1000))
    before = _listing(parent), _listing(run)

    result = cli("merge-shards", source, "--out", parent / "out", *options)

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.stderr
    assert re.search(message, _flat(result.stderr)), result.stderr
    assert (_listing(parent), _listing(run)) == before  # no output, no staging folder, the save untouched


def test_a_failure_after_writing_began_leaves_nothing(runs, tmp_path, monkeypatch):
    from ossft.checkpoints.verify import VerificationError
    from ossft.convert import merge_shards as module

    def broken(folder, written):
        assert Path(folder).parent == tmp_path and Path(folder).name.startswith(".out.")
        assert any(Path(folder).glob("model-*.safetensors"))  # the shards were written, then this fails
        raise VerificationError("simulated")

    monkeypatch.setattr(module, "verify_model_folder", broken)
    with pytest.raises(VerificationError, match="simulated"):
        merge_shards(runs["full"], tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_an_architecture_mismatch_stops_the_writes_at_the_next_batch(runs, tiny_model_dir, tmp_path, monkeypatch):
    # The architecture check runs beside the writes (it imports transformers' model code, ~2 s); when it
    # fails, the writes must stop at once, not after the whole model. Made deterministic: the first
    # batch's read waits until the check has failed.
    from concurrent.futures import wait

    from ossft.convert import merge_shards as module
    from ossft.errors import UserError

    narrow = _config_only_base(tiny_model_dir, tmp_path / "narrow", hidden_size=32, intermediate_size=32)
    checks, read = [], []
    real_write_files = module._write_files

    def write_files(*args, failed=None, **kwargs):
        checks.append(failed)
        return real_write_files(*args, failed=failed, **kwargs)

    def progress(done, total):
        wait(checks, timeout=60)
        read.append((done, total))

    monkeypatch.setattr(module, "_write_files", write_files)
    monkeypatch.setattr(module, "READ_BATCH", 1)  # one tensor per batch
    with pytest.raises(UserError, match=r"\[1045, 64\] in the save but \[1045, 32\] in the architecture"):
        merge_shards(runs["full"], tmp_path / "out", base=str(narrow), on_progress=progress)
    # Read: the embedding (the batch written) and one 8-byte tensor (read ahead, waited for before
    # merge_shards returns), each as its 2 ranks' halves.
    assert len(read) == 4 and read[-1][0] < read[-1][1] / 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["narrow"]  # no output, no staging folder
