"""`export_mxfp4`: a bf16 / fp32 gpt-oss written back in the released MXFP4 layout, streamed, verified, atomic."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from ossft.checkpoints.verify import saved_tensors
from ossft.convert.export import export_mxfp4
from ossft.errors import UserError
from ossft.gptoss import mxfp4
from ossft.gptoss.mxfp4 import QUANTIZATION_CONFIG

# The tiny model (ossft.model.tiny defaults): 2 layers, 4 experts, hidden = intermediate = 64, fp32.
# gate_up_proj [4, 64, 128] + down_proj [4, 64, 64] = 49,152 expert values per layer, 98,304 in all.
EXPERT_VALUES = 2 * (4 * 64 * 128 + 4 * 64 * 64)
MXFP4_BYTES = EXPERT_VALUES // 32 * 17  # per block of 32 values: 16 bytes of codes + 1 scale byte


def _load_mxfp4(folder: Path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM, Mxfp4Config

    model, info = AutoModelForCausalLM.from_pretrained(
        folder, quantization_config=Mxfp4Config(dequantize=True), dtype=dtype, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


def _load_plain(folder: Path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    progress = []
    out = tmp_path_factory.mktemp("export") / "tiny-mxfp4"
    report = export_mxfp4(tiny_model_dir, out, on_progress=lambda done, total: progress.append((done, total)))
    return report, progress


@pytest.fixture(scope="module")
def original(tiny_model_dir):
    return dict(saved_tensors(tiny_model_dir))


def test_reload_gives_packed_experts_and_every_other_tensor_unchanged(exported, original, tiny_model_dir):
    report, _ = exported
    out = report.out_dir
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model-00001-of-00001.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert report.shards == ["model-00001-of-00001.safetensors"] and report.copied == [
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    for name in report.copied:
        assert (out / name).read_bytes() == (tiny_model_dir / name).read_bytes()
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"] == QUANTIZATION_CONFIG
    assert config["dtype"] == config["torch_dtype"] == "bfloat16"
    assert config["architectures"] == ["GptOssForCausalLM"]
    before = json.loads((tiny_model_dir / "config.json").read_text())
    changed = {"quantization_config", "dtype", "torch_dtype"}
    assert {k: v for k, v in config.items() if k not in changed} == {k: v for k, v in before.items() if k != "dtype"}

    # On disk: experts as uint8 blocks / scales, the rest byte for byte what was there, in its own dtype.
    written = dict(saved_tensors(out))
    experts = [n for n in original if n.endswith(mxfp4.EXPERT_PROJECTIONS)]
    assert len(experts) == 4
    assert set(written) == (set(original) - set(experts)) | set(mxfp4.expert_tensor_names(2))
    assert report.tensors == len(written) == 41
    for name in experts:
        blocks, scales = mxfp4.pack(original[name])
        assert torch.equal(written[f"{name}_blocks"], blocks) and torch.equal(written[f"{name}_scales"], scales)
    for name in set(original) - set(experts):
        assert written[name].dtype == original[name].dtype == torch.float32
        assert torch.equal(written[name], original[name]), name

    # Through transformers' own MXFP4 loader: no missing / unexpected keys, experts = unpack(pack(W)) exactly.
    params = dict(_load_mxfp4(out).named_parameters())
    assert set(params) == set(original)
    for name, tensor in original.items():
        if name in experts:
            want = mxfp4.unpack(*mxfp4.pack(tensor), dtype=torch.float32)
        else:
            want = tensor
        assert params[name].dtype == torch.float32
        assert torch.equal(params[name].detach(), want), name


def test_output_has_the_usual_permissions(exported, tmp_path):
    """Not the private 0700 / 0600 of mkdtemp and safetensors: what a plain mkdir / open gives under this umask."""
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe.txt").write_text("x")
    out = exported[0].out_dir
    assert out.stat().st_mode & 0o777 == (tmp_path / "probe").stat().st_mode & 0o777
    for path in out.iterdir():
        assert path.stat().st_mode & 0o777 == (tmp_path / "probe.txt").stat().st_mode & 0o777, path.name


def test_logits_stay_close(exported, tiny_model_dir):
    out = exported[0].out_dir
    plain, quantized, reference = _load_plain(tiny_model_dir), _load_mxfp4(out), _load_plain(tiny_model_dir)
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if name.endswith(mxfp4.EXPERT_PROJECTIONS):
                param.copy_(mxfp4.unpack(*mxfp4.pack(param), dtype=torch.float32))
        ids = torch.randint(0, 1024, (2, 48), generator=torch.Generator().manual_seed(0))
        want, got, ref = plain(ids).logits, quantized(ids).logits, reference(ids).logits
    # The loaded export computes what the unquantized model with MXFP4-rounded experts computes: measured 0.0.
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    # Against the unquantized model, measured on this input: max |diff| 2.003 with max |logit| 3.73 (0.537 of it),
    # ||diff|| / ||logits|| = 0.268, argmax agreeing on 67% of positions. Large, and honest: in this random tiny
    # model the experts' output dominates the residual stream (every weight has std 0.1, hidden 64), each expert
    # weight carries 11.6% RMS error and the gate and up errors multiply; the residual stream after layer 0 is
    # already 15% off. A trained 20b, whose experts were trained for MXFP4, is far less sensitive.
    diff = (got - want).abs()
    assert diff.max() < 2.2
    assert diff.max() / want.abs().max() < 0.6
    assert (got - want).norm() / want.norm() < 0.3


def test_reported_errors_are_quantize_error(exported, original):
    report, progress = exported
    experts = {n: t for n, t in original.items() if n.endswith(mxfp4.EXPERT_PROJECTIONS)}
    assert set(report.errors) == set(experts)
    for name, tensor in experts.items():
        assert report.errors[name] == mxfp4.quantize_error(tensor), name
        assert 0.10 < report.errors[name] < 0.13  # measured 0.1161-0.1169 (Gaussian weights: ~0.1154)
    assert progress[-1] == (report.bytes_in, report.bytes_in)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress) and len(progress) == len(original)
    assert report.seconds > 0


def test_sizes_fp32_and_bf16(exported, original, tiny_model_dir, tmp_path):
    report = exported[0]
    total = sum(t.numel() for t in original.values())
    assert report.bytes_in == 4 * total == 1_037_632
    assert report.bytes_out == 4 * (total - EXPERT_VALUES) + MXFP4_BYTES == 696_640
    assert report.bytes_out == sum(t.numel() * t.element_size() for _, t in saved_tensors(report.out_dir))

    bf16_dir = tmp_path / "tiny-bf16"
    _load_plain(tiny_model_dir).to(torch.bfloat16).save_pretrained(bf16_dir)
    bf16 = export_mxfp4(bf16_dir, tmp_path / "bf16-mxfp4")
    assert bf16.bytes_in == 2 * total
    assert bf16.bytes_out == 2 * (total - EXPERT_VALUES) + MXFP4_BYTES == 374_432
    # The experts shrink from 16 bits a value to 4.25 (4-bit code + an 8-bit scale per 32): 3.76x smaller.
    assert 2 * EXPERT_VALUES / MXFP4_BYTES == pytest.approx(16 / 4.25)
    for name, tensor in saved_tensors(bf16.out_dir):
        assert tensor.dtype == (torch.uint8 if name.endswith(("_blocks", "_scales")) else torch.bfloat16), name
    params = dict(_load_mxfp4(bf16.out_dir, dtype=torch.bfloat16).named_parameters())
    for name, tensor in saved_tensors(bf16_dir):
        want = mxfp4.unpack(*mxfp4.pack(tensor)) if name.endswith(mxfp4.EXPERT_PROJECTIONS) else tensor
        assert torch.equal(params[name].detach(), want), name


def test_small_shards_with_index(exported, tiny_model_dir, tmp_path):
    limit = 100_000
    report = export_mxfp4(tiny_model_dir, tmp_path / "sharded", max_shard_size=limit)
    out = report.out_dir
    assert len(report.shards) == 4
    assert report.shards == [f"model-{i:05d}-of-00004.safetensors" for i in range(1, 5)]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == report.bytes_out == exported[0].bytes_out
    assert set(index["weight_map"].values()) == set(report.shards)
    for shard in report.shards:
        from safetensors import safe_open

        with safe_open(str(out / shard), framework="pt") as handle:
            names = list(handle.keys())
            size = sum(handle.get_tensor(n).numel() * handle.get_tensor(n).element_size() for n in names)
        assert all(index["weight_map"][n] == shard for n in names)
        # A shard only goes past the limit when it holds one tensor bigger than it (the 1045 x 64 fp32 embedding
        # and lm_head here), or one expert's blocks + scales, which are never split.
        units = {n.removesuffix("_blocks").removesuffix("_scales") for n in names}
        assert size <= limit or len(units) == 1, (shard, size, names)
    for name in index["weight_map"]:
        if name.endswith("_blocks"):
            assert index["weight_map"][name] == index["weight_map"][name.replace("_blocks", "_scales")]
    single = dict(saved_tensors(exported[0].out_dir))
    assert {n: torch.equal(t, single[n]) for n, t in saved_tensors(out)} == {n: True for n in single}
    assert report.errors == exported[0].errors
    _load_mxfp4(out)  # loads across shards with no missing or unexpected keys


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _refused(model_dir, out: Path, match: str, **kwargs):
    out.parent.mkdir(parents=True, exist_ok=True)
    before = _listing(out.parent)
    with pytest.raises(UserError, match=match):
        export_mxfp4(model_dir, out, **kwargs)
    assert _listing(out.parent) == before  # no staging folder, no half-made output


def test_refusals_leave_nothing_behind(exported, tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "parent" / "out"
    _refused(tmp_path / "nope", out, r"^model folder not found: .*nope\. Pass the folder of a merged")
    (tmp_path / "a-file").write_text("x")
    _refused(tmp_path / "a-file", out, r"is a file, not a model folder")

    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(empty, out, r"empty holds no config\.json, so it is not a model folder")
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    _refused(no_weights, out, r"no-weights holds no safetensors weights .* not a model folder ossft can export")

    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    _refused(llama, out, r"holds a llama model, not gpt-oss; MXFP4 export is for gpt-oss only")

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    _refused(
        adapter,
        out,
        r"adapter is a LoRA adapter, not a full model\. Merge it first with `ossft merge-lora .*adapter --out "
        r"MERGED_DIR`, then export MERGED_DIR\.$",
    )

    _refused(exported[0].out_dir, out, r"tiny-mxfp4 is already MXFP4 .* nothing to export")

    # Trap 1's folder: *_blocks names, no quantization_config.
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "model-00001-of-00001.safetensors", "model.safetensors.index.json"):
        (broken / name).write_bytes((exported[0].out_dir / name).read_bytes())
    config = json.loads((broken / "config.json").read_text())
    del config["quantization_config"]
    (broken / "config.json").write_text(json.dumps(config))
    _refused(broken, out, r"already holds MXFP4-style expert tensors \(model\.layers\.0\.mlp\.experts\.down_proj_")

    full = tmp_path / "parent" / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    _refused(tiny_model_dir, full, r"full already exists and is not empty\. Choose another --out folder")
    assert _listing(full) == ["keep.txt"]
    _refused(tiny_model_dir, out, r"positive number of bytes", max_shard_size=0)

    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, 1000))
    _refused(tiny_model_dir, out, r"^not enough disk space in .*parent: the MXFP4 model needs 0\.0 GiB")


def test_failed_verification_removes_the_staging_folder(tiny_model_dir, tmp_path, monkeypatch):
    from ossft.checkpoints import verify

    def broken(folder, written):
        assert Path(folder).parent == tmp_path and Path(folder).name.startswith(".out.")
        raise verify.VerificationError("simulated")

    monkeypatch.setattr(verify, "verify_model_folder", broken)
    with pytest.raises(verify.VerificationError, match="simulated"):
        export_mxfp4(tiny_model_dir, tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_empty_out_folder_is_used(tiny_model_dir, tmp_path):
    (tmp_path / "out").mkdir()
    report = export_mxfp4(tiny_model_dir, tmp_path / "out")
    assert (report.out_dir / "model.safetensors.index.json").is_file() and _listing(tmp_path) == ["out"]
