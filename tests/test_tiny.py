"""The tiny offline gpt-oss: real architecture, loadable with Auto classes, byte-identical per seed."""

from __future__ import annotations

import hashlib

import pytest
import torch

from ossft.harmony.render import SPECIAL_TOKENS


def digests(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_gives_identical_bytes(cli, tmp_path, tiny_model_dir):
    result = cli("tiny-model", tmp_path / "again")
    assert result.exit_code == 0, result.output
    assert digests(tmp_path / "again") == digests(tiny_model_dir)
    assert set(digests(tiny_model_dir)) >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
    }


def test_other_seed_gives_other_weights_same_tokenizer(cli, tmp_path, tiny_model_dir):
    assert cli("tiny-model", tmp_path / "seed1", "--seed", "1").exit_code == 0
    theirs, ours = digests(tmp_path / "seed1"), digests(tiny_model_dir)
    assert theirs["model.safetensors"] != ours["model.safetensors"]
    assert theirs["tokenizer.json"] == ours["tokenizer.json"]


def test_loads_offline_with_auto_classes(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GptOssForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert isinstance(model, GptOssForCausalLM)
    config = model.config
    assert (config.num_hidden_layers, config.num_local_experts, config.num_experts_per_tok, config.hidden_size) == (
        2,
        4,
        2,
        64,
    )
    assert config.layer_types == ["sliding_attention", "full_attention"]
    assert config.vocab_size == len(tokenizer) == 1024 + len(SPECIAL_TOKENS)
    # gpt-oss's special-token map: eos <|return|>, pad <|endoftext|>, bos <|startoftext|>
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == (
        "<|return|>",
        "<|endoftext|>",
        "<|startoftext|>",
    )
    assert config.eos_token_id == tokenizer.eos_token_id
    # the special tokens keep their real relative order, right after the BPE vocabulary
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(1024, 1024 + len(SPECIAL_TOKENS)))
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, config.vocab_size) and torch.isfinite(logits).all()


def test_tokenizer_round_trips_harmony_text(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "<|start|>user<|message|>Wie viel ist 3 + 4? Ça fait 7 ✓<|end|><|start|>assistant"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|start|>") and ids[-2] == ids[0]


def test_bigger_spec(cli, tmp_path):
    result = cli("tiny-model", tmp_path / "m", "--layers", "4", "--experts", "8", "--top-k", "4", "--hidden", "32")
    assert result.exit_code == 0, result.output
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tmp_path / "m")
    assert (config.num_hidden_layers, config.num_local_experts, config.num_experts_per_tok, config.hidden_size) == (
        4,
        8,
        4,
        32,
    )
    assert config.layer_types == ["sliding_attention", "full_attention"] * 2


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--layers", "1"], "at least 2"),
        (["--top-k", "5"], "between 1 and --experts (4)"),
        (["--hidden", "30"], "must split into 4 heads"),
    ],
)
def test_bad_spec_exits_2(cli, tmp_path, args, fragment):
    result = cli("tiny-model", tmp_path / "m", *args)
    assert result.exit_code == 2 and fragment in result.stderr
    assert not (tmp_path / "m").exists()


def test_refuses_to_overwrite(cli, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("mine")
    result = cli("tiny-model", tmp_path / "m")
    assert result.exit_code == 2 and "not empty" in result.stderr
    assert (tmp_path / "m" / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging folder left behind
