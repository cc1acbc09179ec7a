"""The real gpt-oss tokenizer (o200k_harmony) as a Hugging Face fast tokenizer, built offline.

No hub is reachable in tests, so the tokenizer is put together from the data in
`../shared/fixtures/gpt-oss-tokenizer/` (see `../shared/fixtures/README.md`):

1. `o200k_base.tiktoken.gz` is unzipped (and its sha256 checked) into a cache folder under the
   name tiktoken looks for, `fb374d419588a4632f3f557e76b4b70aebbca790` (the sha1 of the ranks'
   download address). With `TIKTOKEN_CACHE_DIR` pointing there, `tiktoken.get_encoding("o200k_harmony")`
   works without a network.
2. The encoding's BPE ranks and split pattern become a `tokenizers` BPE model with transformers'
   own `TikTokenConverter` (what `transformers.integrations.tiktoken.convert_tiktoken_to_fast` uses).
   The special tokens are added here rather than by the converter, because the converter numbers
   them in the order of tiktoken's dict, which is not the order of their ids. Id 200018 has two names
   in tiktoken (`<|endofprompt|>` and `<|reserved_200018|>`); like the tokenizer on the hub, we keep
   `<|endofprompt|>`.
3. The result is checked (size, special ids, anchors) and saved with `save_pretrained`, and then
   always loaded back from that folder with `AutoTokenizer`, so a first and a later run see the same
   object.

Everything lands in `<tempdir>/ossft-o200k-<key>/`, where the key hashes the fixture files, this
builder's version and the transformers/tokenizers versions. Each piece is written to a temporary name
and renamed into place, so concurrent or interrupted runs never leave a half-written cache. Delete
the folder to force a rebuild. Nothing from the fixtures is copied into the repository.

Use `gpt_oss_tokenizer_available()` to skip tests where this cannot work, then
`load_gpt_oss_tokenizer()`. `harmony_encodings_dir()` gives openai-harmony the same verified ranks
under the name it reads offline (for `TIKTOKEN_ENCODINGS_BASE`). The returned tokenizer is shared within the process: do not modify it.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
TOKENIZER_FIXTURES = FIXTURES / "gpt-oss-tokenizer"
RANKS_GZ = TOKENIZER_FIXTURES / "o200k_base.tiktoken.gz"
SPECIAL_TOKENS_JSON = TOKENIZER_FIXTURES / "special_tokens.json"
CHAT_TEMPLATE = TOKENIZER_FIXTURES / "chat_template.jinja"

ENCODING_NAME = "o200k_harmony"
RANKS_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
RANKS_CACHE_NAME = "fb374d419588a4632f3f557e76b4b70aebbca790"  # sha1(RANKS_URL): tiktoken's cache key
RANKS_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"  # of the unzipped file
BASE_VOCAB_SIZE = 199_998  # mergeable ranks 0..199997
VOCAB_SIZE = 201_088  # ids 0..201087, as the model's vocab_size

BOS, EOS, PAD = "<|startoftext|>", "<|return|>", "<|endoftext|>"
SPECIAL_IDS = {
    "<|startoftext|>": 199998,
    "<|endoftext|>": 199999,
    "<|return|>": 200002,
    "<|constrain|>": 200003,
    "<|channel|>": 200005,
    "<|start|>": 200006,
    "<|end|>": 200007,
    "<|message|>": 200008,
    "<|call|>": 200012,
    "<|endofprompt|>": 200018,
}
# text -> ids, from special_tokens.json "anchors"; "<|start|>" is meant as plain text here.
ANCHORS = {
    "hello world": [24912, 2375],
    "assistant": [173781],
    "analysis": [35644],
    "final": [17196],
    "<|start|>": [27, 91, 5236, 91, 29],
}

_BUILD_VERSION = "1"  # bump when the build changes, so that old disk caches are not reused


def gpt_oss_tokenizer_available() -> bool:
    """True when the fixture files are present and tiktoken (with o200k_harmony) can be imported."""
    if not all(p.is_file() for p in (RANKS_GZ, SPECIAL_TOKENS_JSON, CHAT_TEMPLATE)):
        return False
    try:
        import tiktoken

        return ENCODING_NAME in tiktoken.list_encoding_names()
    except Exception:  # not installed (ImportError), or too old to know o200k_harmony
        return False


def load_gpt_oss_tokenizer(chat_template: bool = True):
    """The gpt-oss tokenizer (201,088 ids, bos/eos/pad = <|startoftext|>/<|return|>/<|endoftext|>).

    With `chat_template=True` (the default) it carries the HF chat template of openai/gpt-oss-20b
    from the fixtures. Built once per machine (disk cache) and loaded once per process.
    """
    return _load(bool(chat_template))


@functools.cache
def _load(chat_template: bool):
    tokenizer = _load_built()
    tokenizer.chat_template = CHAT_TEMPLATE.read_text(encoding="utf-8") if chat_template else None
    return tokenizer


def cache_dir() -> Path:
    """The folder this machine's build lives in (depends on the fixtures and library versions)."""
    return _cache_dir()


@functools.cache
def _cache_dir() -> Path:
    import tokenizers
    import transformers

    h = hashlib.sha256()
    for part in (
        RANKS_GZ.read_bytes(),
        SPECIAL_TOKENS_JSON.read_bytes(),
        _BUILD_VERSION.encode(),
        transformers.__version__.encode(),
        tokenizers.__version__.encode(),
    ):
        h.update(hashlib.sha256(part).digest())
    return Path(tempfile.gettempdir()) / f"ossft-o200k-{h.hexdigest()[:16]}"


def _tiktoken_dir() -> Path:
    """The TIKTOKEN_CACHE_DIR holding the unzipped, verified o200k_base ranks."""
    folder = _cache_dir() / "tiktoken"
    target = folder / RANKS_CACHE_NAME
    if target.is_file() and _sha256_file(target) == RANKS_SHA256:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{RANKS_CACHE_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(RANKS_GZ, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        got = _sha256_file(Path(tmp))
        if got != RANKS_SHA256:
            raise RuntimeError(f"{RANKS_GZ} unzips to sha256 {got}, expected {RANKS_SHA256}")
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return folder


def harmony_encodings_dir() -> Path:
    """A folder holding the verified ranks as `o200k_base.tiktoken`, for openai-harmony.

    openai-harmony (0.0.8) downloads its vocabulary unless `TIKTOKEN_ENCODINGS_BASE` names a folder that holds
    the file under its download name; tiktoken's cache key is a different name, hence a second folder.
    """
    folder = _cache_dir() / "harmony"
    target = folder / "o200k_base.tiktoken"
    if target.is_file() and _sha256_file(target) == RANKS_SHA256:
        return folder
    source = _tiktoken_dir() / RANKS_CACHE_NAME
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".o200k_base.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return folder


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.cache
def tiktoken_encoding():
    """tiktoken's own o200k_harmony encoding, loaded offline from the fixtures (the reference)."""
    import tiktoken

    folder = _tiktoken_dir()
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    try:
        return tiktoken.get_encoding(ENCODING_NAME)
    finally:
        if old is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old


def special_tokens_by_id() -> dict[int, str]:
    """id -> name of every special token, 199998..201087; 200018 is `<|endofprompt|>`."""
    enc = tiktoken_encoding()
    by_id: dict[int, str] = {}
    for name in sorted(enc.special_tokens_set):
        i = enc.encode_single_token(name)
        # Two names share 200018; keep the real one over the "<|reserved_N|>" alias.
        if i not in by_id or by_id[i].startswith("<|reserved_"):
            by_id[i] = name
    if sorted(by_id) != list(range(BASE_VOCAB_SIZE, VOCAB_SIZE)):
        raise RuntimeError(f"unexpected special-token ids in tiktoken's {ENCODING_NAME}")
    return by_id


def _load_built():
    """Load the converted tokenizer from the disk cache, building and saving it there first if needed."""
    target = _cache_dir() / "hf"
    if target.is_dir():
        try:
            tokenizer = _load_from_disk(target)
            _check(tokenizer)
            return tokenizer
        except Exception:
            shutil.rmtree(target, ignore_errors=True)  # unreadable or stale: build it again
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".hf-", suffix=".tmp"))
    try:
        built = _build()
        _check(built)
        built.save_pretrained(str(tmp))
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # otherwise another process got there first, with the same content
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = _load_from_disk(target)
    _check(tokenizer)
    return tokenizer


def _load_from_disk(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _build():
    """Convert tiktoken's o200k_harmony into a transformers fast tokenizer (a few seconds)."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    enc = tiktoken_encoding()

    class _InMemoryConverter(TikTokenConverter):
        """TikTokenConverter fed with ranks already in memory instead of a .tiktoken file."""

        def load_tiktoken_bpe(self, tiktoken_url):
            return enc._mergeable_ranks

    backend = _InMemoryConverter(vocab_file=RANKS_URL, pattern=enc._pat_str).converted()
    if backend.get_vocab_size(with_added_tokens=False) != BASE_VOCAB_SIZE:
        raise RuntimeError(f"converted BPE has {backend.get_vocab_size()} tokens, expected {BASE_VOCAB_SIZE}")
    # Added tokens take the next free ids in order, so adding them sorted by id keeps tiktoken's ids.
    specials = special_tokens_by_id()
    backend.add_special_tokens(
        [AddedToken(specials[i], normalized=False, special=True) for i in range(BASE_VOCAB_SIZE, VOCAB_SIZE)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def _check(tokenizer) -> None:
    """Fail loudly if the tokenizer does not have gpt-oss's size, special ids and anchor encodings."""
    problems = []
    if len(tokenizer) != VOCAB_SIZE:
        problems.append(f"len {len(tokenizer)} != {VOCAB_SIZE}")
    for name, i in SPECIAL_IDS.items():
        if tokenizer.convert_tokens_to_ids(name) != i:
            problems.append(f"{name} -> {tokenizer.convert_tokens_to_ids(name)}, expected {i}")
    if (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) != (BOS, EOS, PAD):
        problems.append(f"bos/eos/pad = {tokenizer.bos_token}/{tokenizer.eos_token}/{tokenizer.pad_token}")
    for text, ids in ANCHORS.items():
        got = tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
        if got != ids:
            problems.append(f"{text!r} -> {got}, expected {ids}")
    if problems:
        raise RuntimeError("gpt-oss tokenizer check failed: " + "; ".join(problems))


def anchors_from_fixture() -> dict[str, list[int]]:
    """The "anchors" of special_tokens.json as text -> ids (keys there look like "'hello world' ordinary")."""
    data = json.loads(SPECIAL_TOKENS_JSON.read_text(encoding="utf-8"))
    return {key.split("'")[1]: ids for key, ids in data["anchors"].items()}
