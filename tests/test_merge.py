"""merge-lora: the merged model computes what base + adapter compute, and equals PEFT's own merge, streamed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ossft.checkpoints.verify import saved_tensors
from ossft.convert.merge_lora import merge_lora
from ossft.errors import UserError
from ossft.gptoss import mxfp4
from ossft.model.tiny import TinySpec, build_model, write_tiny_model
from ossft.recipe.load import load_recipe

REPO = Path(__file__).resolve().parents[1]
LORA_LAYERS = (1, 3)  # experts with LoRA; 0 and 2 stay as they were


def _load(folder, **kwargs):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs).eval()


def _make_adapter(base_dir: Path, out: Path, lora_config=None, seed: int = 0, **load_kwargs) -> Path:
    """LoRA on the base as the quickstart recipe (or `lora_config`) says, lora_B made non-zero, saved by PEFT."""
    from peft import get_peft_model

    from ossft.model.load import apply_lora

    model = _load(base_dir, **load_kwargs)
    if lora_config is None:
        overrides = [f"model.base_model={base_dir}", "model.dtype=float32", f"lora.experts={list(LORA_LAYERS)}"]
        peft_model = apply_lora(model, load_recipe(REPO / "recipes" / "quickstart.yaml", overrides))
    else:
        peft_model = get_peft_model(model, lora_config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # zero at init, which would make every delta zero
                param.copy_(torch.randn(param.shape, generator=g) * 0.05)
    peft_model.save_pretrained(out)
    return out


def _with_adapter(base_dir: Path, adapter_dir: Path, **load_kwargs):
    from peft import PeftModel

    return PeftModel.from_pretrained(_load(base_dir, **load_kwargs), adapter_dir).eval()


def _logits(model) -> torch.Tensor:
    ids = torch.randint(0, 1000, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("base") / "tiny4", TinySpec(layers=4))


@pytest.fixture(scope="module")
def adapter_dir(base_dir, tmp_path_factory) -> Path:
    return _make_adapter(base_dir, tmp_path_factory.mktemp("adapter") / "adapter")


def test_merged_model_computes_base_plus_adapter(base_dir, adapter_dir, tmp_path):
    report = merge_lora(adapter_dir, tmp_path / "merged")

    merged_logits = _logits(_load(tmp_path / "merged"))
    adapter_logits = _logits(_with_adapter(base_dir, adapter_dir))
    assert (merged_logits - adapter_logits).abs().max() < 1e-4
    assert (merged_logits - _logits(_load(base_dir))).abs().max() > 0.1  # the adapter really changes the model

    attention = [f"model.layers.{i}.self_attn.{p}_proj.weight" for i in range(4) for p in "koqv"]
    experts = [f"model.layers.{i}.mlp.experts.{p}" for i in LORA_LAYERS for p in ("down_proj", "gate_up_proj")]
    assert sorted(report.merged_tensors) == sorted(attention + experts)
    base, merged = load_file(base_dir / "model.safetensors"), dict(saved_tensors(tmp_path / "merged"))
    assert set(merged) == set(base) and report.tensors == len(base) and report.shards == 1
    for name in base:  # everything without a delta is bit-identical: layers 0 and 2's experts, norms, router...
        assert torch.equal(merged[name], base[name]) != (name in report.merged_tensors), name
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["architectures"] == ["GptOssForCausalLM"] and "quantization_config" not in config
    files = {p.name for p in (tmp_path / "merged").iterdir()}
    assert files == {
        "config.json",
        "generation_config.json",
        "model-00001-of-00001.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # the staging folder is gone


def _pattern_config():
    """rsLoRA, per-target ranks and alphas, and one layer with down_proj alone (so a single, unnested wrapper)."""
    from peft import LoraConfig

    return LoraConfig(
        r=8,
        lora_alpha=16,
        use_rslora=True,
        rank_pattern={"q_proj": 4, "layers.1.mlp.experts.down_proj": 2},
        alpha_pattern={"gate_up_proj": 5, "layers.2.self_attn.o_proj": 3},
        target_modules=["q_proj", "o_proj"],
        target_parameters=[
            "layers.1.mlp.experts.gate_up_proj",
            "layers.1.mlp.experts.down_proj",
            "layers.3.mlp.experts.down_proj",
        ],
    )


# peft 0.21.2 warns that pattern keys naming target_parameters "were ignored", yet applies them (checked: the
# wrappers get r=2 and alpha 5); the comparison with merge_and_unload below would fail if either side skipped them.
@pytest.mark.filterwarnings("ignore:The following (rank|alpha)_pattern keys did not match")
@pytest.mark.parametrize("variant", ["recipe", "patterns"])
def test_merge_equals_peft_merge_and_unload(base_dir, adapter_dir, tmp_path, variant):
    if variant == "patterns":
        adapter_dir = _make_adapter(base_dir, tmp_path / "adapter", _pattern_config(), seed=2)
    report = merge_lora(adapter_dir, tmp_path / "merged")

    theirs = _with_adapter(base_dir, adapter_dir).merge_and_unload().state_dict()
    ours = dict(saved_tensors(tmp_path / "merged"))
    assert set(ours) == set(theirs)
    for name, tensor in ours.items():
        assert (tensor - theirs[name]).abs().max() <= 1e-5, name
    if variant == "patterns":
        assert report.merged_tensors == [
            "model.layers.0.self_attn.o_proj.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.1.mlp.experts.down_proj",
            "model.layers.1.mlp.experts.gate_up_proj",
            "model.layers.1.self_attn.o_proj.weight",
            "model.layers.1.self_attn.q_proj.weight",
            "model.layers.2.self_attn.o_proj.weight",
            "model.layers.2.self_attn.q_proj.weight",
            "model.layers.3.mlp.experts.down_proj",
            "model.layers.3.self_attn.o_proj.weight",
            "model.layers.3.self_attn.q_proj.weight",
        ]


def test_sharded_output_with_index(adapter_dir, tmp_path):
    progress = []
    one = merge_lora(adapter_dir, tmp_path / "one")
    report = merge_lora(
        adapter_dir, tmp_path / "many", max_shard_size=150_000, on_progress=lambda *a: progress.append(a)
    )

    folder = tmp_path / "many"
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert report.shards == len(shards) > 2 and not (folder / "model.safetensors").exists()
    assert shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    assert sorted(set(index["weight_map"].values())) == shards
    single = dict(saved_tensors(tmp_path / "one"))
    found = {}
    for shard in shards:
        state = load_file(folder / shard)
        size = sum(t.numel() * t.element_size() for t in state.values())
        assert size <= 150_000 or len(state) == 1, shard  # only a tensor bigger than the limit has a shard alone
        assert all(index["weight_map"][name] == shard for name in state)
        found.update(state)
    assert set(index["weight_map"]) == set(found) == set(single) and report.tensors == one.tensors == len(single)
    assert all(torch.equal(found[name], single[name]) for name in single)
    total = sum(t.numel() * t.element_size() for t in single.values())
    assert index["metadata"]["total_size"] == total
    assert progress[-1] == (total, total) and [p[0] for p in progress] == sorted(p[0] for p in progress)


def _write_mxfp4_base(base_dir: Path, out: Path) -> Path:
    """The tiny base as the released checkpoints store it: experts packed to MXFP4 blocks and scales."""
    shutil.copytree(base_dir, out)
    state = load_file(out / "model.safetensors")
    for name in [n for n in state if n.endswith(mxfp4.EXPERT_PROJECTIONS)]:
        state[f"{name}_blocks"], state[f"{name}_scales"] = mxfp4.pack(state.pop(name))
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"] = dict(mxfp4.QUANTIZATION_CONFIG)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def test_mxfp4_base_is_dequantized_and_merged(base_dir, tmp_path):
    from transformers import Mxfp4Config

    dequantize = {"quantization_config": Mxfp4Config(dequantize=True)}
    packed = _write_mxfp4_base(base_dir, tmp_path / "mxfp4")
    adapter = _make_adapter(packed, tmp_path / "adapter", seed=3, **dequantize)
    report = merge_lora(adapter, tmp_path / "merged", dtype=torch.float32)

    merged_logits = _logits(_load(tmp_path / "merged"))
    assert (merged_logits - _logits(_with_adapter(packed, adapter, **dequantize))).abs().max() < 1e-4
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    merged, packed_state = dict(saved_tensors(tmp_path / "merged")), load_file(packed / "model.safetensors")
    assert not any(n.endswith(("_blocks", "_scales")) for n in merged) and report.tensors == len(merged)
    for name in (f"model.layers.{i}.mlp.experts.{p}" for i in (0, 2) for p in mxfp4.EXPERT_PROJECTIONS):
        blocks, scales = packed_state[f"{name}_blocks"], packed_state[f"{name}_scales"]
        assert torch.equal(merged[name], mxfp4.unpack(blocks, scales, dtype=torch.float32)), name


@pytest.fixture(scope="module")
def narrow_base(base_dir, tmp_path_factory) -> Path:
    """A hidden-32 gpt-oss with the same vocabulary: the wrong base for a hidden-64 adapter."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    out = tmp_path_factory.mktemp("narrow") / "tiny32"
    build_model(TinySpec(layers=4, hidden=32), len(tokenizer), tokenizer).save_pretrained(out)
    return out


def _moved_base(adapter_dir: Path, tmp_path: Path) -> Path:
    copy = shutil.copytree(adapter_dir, tmp_path / "adapter")
    config = json.loads((copy / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "moved-away")
    (copy / "adapter_config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize(
    "case, message",
    [
        (
            "missing adapter",
            r"adapter folder not found: .*/nowhere\. Pass the output folder of a LoRA `ossft train` run",
        ),
        ("not an adapter", r"tiny4 is not a LoRA adapter \(a full model\): there is nothing to merge\."),
        ("base moved", r"base model not found: '.*/moved-away' is not a local folder, nor a Hub id in the local "),
        ("base missing", r"base model not found: '.*/nowhere' .* Check the path\."),
        (
            "base not a model",
            r"/empty is not a model folder \(no config\.json\)\. Pass the base model with --base PATH",
        ),
        (
            "shape mismatch",
            re.escape(
                "the adapter does not fit the base model: model.layers.0.self_attn.k_proj.weight is [16, 32] in the "
                "base, but the adapter's lora_A [8, 64] and lora_B [32, 8] (r=8) make a delta of [32, 64]. The "
                "adapter was trained on another model; pass that model with --base."
            ),
        ),
        ("out not empty", r"/out already exists and is not empty\. Choose another --out folder or delete it first\."),
    ],
)
def test_errors_say_what_to_fix_and_leave_nothing(case, message, base_dir, adapter_dir, narrow_base, tmp_path):
    parent = tmp_path / "parent"
    parent.mkdir()
    (tmp_path / "empty").mkdir()
    adapter, base = adapter_dir, None
    if case == "missing adapter":
        adapter = tmp_path / "nowhere"
    elif case == "not an adapter":
        adapter = base_dir
    elif case == "base moved":
        adapter = _moved_base(adapter_dir, tmp_path)
    elif case == "base missing":
        base = tmp_path / "nowhere"
    elif case == "base not a model":
        base = tmp_path / "empty"
    elif case == "shape mismatch":
        base = narrow_base
    elif case == "out not empty":
        (parent / "out").mkdir()
        (parent / "out" / "keep.txt").write_text("mine")
    before = sorted(str(p.relative_to(parent)) for p in parent.rglob("*"))

    with pytest.raises(UserError, match=message):
        merge_lora(adapter, parent / "out", base=base)
    assert sorted(str(p.relative_to(parent)) for p in parent.rglob("*")) == before
