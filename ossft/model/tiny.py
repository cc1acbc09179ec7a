"""A tiny random gpt-oss and a small tokenizer, made offline, for the quickstart and the tests.

The model is the real `GptOssForCausalLM` (router, top-k experts, sinks, alternating sliding and
full attention), only small. The tokenizer is a byte-level BPE trained here on the sample data and
carries gpt-oss's special tokens in their real order, so harmony renders tokenize as they would
with the real vocabulary, just into fewer, shorter ids. Same arguments and seed -> identical files.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ossft.checkpoints.layout import require_empty_output
from ossft.data import chat, rows
from ossft.errors import UserError
from ossft.files import EXAMPLES_DIR
from ossft.gptoss.facts import EXPERT_PARAMETERS
from ossft.harmony import render
from ossft.harmony.render import SPECIAL_TOKENS

SAMPLE_DATA = EXAMPLES_DIR / "chat_multilingual.jsonl"


@dataclass(frozen=True)
class TinySpec:
    layers: int = 2
    experts: int = 4
    experts_per_token: int = 2
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 2
    vocab: int = 1024  # BPE size before the special tokens
    seed: int = 0

    def check(self) -> None:
        if self.layers < 2:
            raise UserError("--layers must be at least 2, so the model has both a sliding and a full attention layer.")
        if not 1 <= self.experts_per_token <= self.experts:
            raise UserError(f"top-k ({self.experts_per_token}) must be between 1 and --experts ({self.experts}).")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise UserError(
                f"--hidden ({self.hidden}) must split into {self.heads} heads, in groups of {self.kv_heads}."
            )


def write_tiny_model(
    out: str | Path, spec: TinySpec = TinySpec(), corpus: str | Path = SAMPLE_DATA, mxfp4: bool = False
) -> Path:
    """Write model + tokenizer to `out` (via a temporary folder, so a failure leaves nothing half-made)."""
    spec.check()
    out = Path(out)
    require_empty_output(out, choose="another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tokenizer = build_tokenizer(corpus, spec.vocab)
        tokenizer.save_pretrained(staging)
        model = build_model(spec, len(tokenizer), tokenizer)
        if mxfp4:
            save_as_mxfp4(model, staging)
        else:
            model.save_pretrained(staging)
        (staging / "tiny_spec.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def save_as_mxfp4(model, folder: Path) -> None:
    """Save like a released gpt-oss checkpoint: experts as MXFP4 blocks and scales, the rest as is."""
    from safetensors.torch import save_file

    from ossft.gptoss import mxfp4

    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    for name in [n for n in state if n.endswith(EXPERT_PARAMETERS)]:
        state[f"{name}_blocks"], state[f"{name}_scales"] = mxfp4.pack(state.pop(name))
    model.config.quantization_config = dict(mxfp4.QUANTIZATION_CONFIG)
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def build_tokenizer(corpus: str | Path, vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = Path(corpus)
    if not corpus.is_file():
        raise UserError(f"tokenizer corpus not found: {corpus}. Pass --corpus with a .jsonl file of conversations.")
    texts = list(_corpus_texts(corpus))
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes, whatever the text
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, clean_up_tokenization_spaces=False)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    # gpt-oss's own special-token map: eos is <|return|>, padding uses <|endoftext|>.
    tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = "<|startoftext|>", "<|return|>", "<|endoftext|>"
    tokenizer.model_max_length = 4096
    return tokenizer


def _corpus_texts(corpus: Path):
    """Plain-text runs of each conversation rendered in harmony (special tokens are not BPE material)."""
    for line in corpus.read_text(encoding="utf-8").splitlines():
        if line.strip():
            conversation = chat.to_conversation(rows.parse_row(json.loads(line)), render.SystemBlock())
            for example in render.training_examples(conversation, thinking="keep_all"):
                yield from (p.text for p in render.render_example(example) if not p.special)


def build_model(spec: TinySpec, vocab_size: int, tokenizer):
    import torch
    from transformers import GptOssConfig, GptOssForCausalLM

    config = GptOssConfig(
        num_hidden_layers=spec.layers,
        num_local_experts=spec.experts,
        num_experts_per_tok=spec.experts_per_token,
        hidden_size=spec.hidden,
        intermediate_size=spec.hidden,
        head_dim=spec.hidden // spec.heads,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        vocab_size=vocab_size,
        # A window shorter than a sample conversation, so the sliding layers really slide.
        sliding_window=64,
        max_position_embeddings=4096,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(spec.layers)],
        rope_parameters={
            "rope_type": "yarn",
            "rope_theta": 150000.0,
            "factor": 32.0,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "truncate": False,
            "original_max_position_embeddings": 4096,
        },
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        # gpt-oss's 0.02 suits width 2880. At width 64 it caps every logit near +-1, so a LoRA on a
        # random tiny model could barely move the loss; 0.1 gives it logits with room to learn.
        initializer_range=0.1,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(spec.seed)
    model = GptOssForCausalLM(config)
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids(t) for t in ("<|return|>", "<|call|>")]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()
