"""Benchmark: how fast ossft prepares training data, against TRL's own preparation of the same rows.

One command does all of it:

1. writes N synthetic conversations (seeded, so the same flags give the same file) to a jsonl in a
   temporary folder: OpenAI / Hugging Face `messages` rows, 1 to 3 turns, assistant `thinking`,
   a developer message in some, text in a dozen languages, each about --target-tokens o200k tokens
   of message text;
2. times `ossft.data.prepare.prepare_data` on a recipe that reads that file (the real gpt-oss tokenizer,
   an empty data cache, train.max_length 8192 so nothing is dropped);
3. times the same call again, which must be served from the cache the first one wrote;
4. times TRL on the same file: `datasets.load_dataset("json")` and then `SFTTrainer._prepare_dataset`,
   the method `SFTTrainer.__init__` runs on a conversational train dataset, with the Hugging Face
   chat template and `assistant_only_loss=False` (what `trl sft` does with this data). The trainer is
   built around a row or two and a tiny random GptOssForCausalLM, so only the timed call touches
   the full data; datasets' cache is off, so every row is really tokenized;
5. prints machine, versions, the command and a result table; `--markdown FILE` appends the same
   section to FILE (with a header if the file is new).

Every timed run happens in a new process of its own (this script with `--worker`), as a real
`ossft train` or `trl sft` would; process start, imports, tokenizer loading, recipe validation and
the TRL trainer's construction are outside the timings. With --repeat K, the three runs are done K
times in turn (ossft, ossft cached, TRL, ossft, ...) and the best time of each is reported.

Usage (from the repository root):

    .venv/bin/python scripts/bench/data_prep.py --conversations 10000 --num-proc 1 --repeat 3 --markdown BENCHMARKS.md

Exit code 2, with a message, when the real tokenizer's fixtures (../shared/fixtures) are missing.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_LENGTH = 8192
SKIP_EXIT = 2
DATA_FILE = "conversations.jsonl"  # in the run's temporary folder, like the two below
TOKENIZER_DIR = "tokenizer"

# ---------------------------------------------------------------------------------------------
# Synthetic conversations

# Everyday words per language; text is drawn from these plus numbers and made-up words.
VOCABULARY: dict[str, str] = {
    "en": "the of and to in is that for it with as was on be at by this had not are but from or have an "
    "they which one you were all we when there can more if out so about what up time would other into "
    "water people year number way could day first long made little work find after world house river "
    "answer question because between market price morning window garden reason system problem result",
    "fr": "le la les de des du un une et en est que pour dans sur avec pas plus par mais comme nous vous "
    "ils elle être avoir faire dire pouvoir aller voir savoir vouloir venir temps année jour chose homme "
    "monde vie main fois maison ville pays question réponse raison travail marché prix matin fenêtre",
    "es": "el la los las de del que y en un una es por con para como pero más sus le ya o este sí porque "
    "cuando muy sin sobre también me hasta hay donde quien desde todo nos durante tiempo año día casa "
    "mundo vida trabajo ciudad país pregunta respuesta razón mercado precio mañana ventana jardín río",
    "de": "der die das und in den von zu mit sich des auf für ist im dem nicht ein eine als auch es an "
    "werden aus er hat dass sie nach wird bei einer um am sind noch wie einem über einen so zum war "
    "Zeit Jahr Tag Haus Welt Leben Arbeit Stadt Land Frage Antwort Grund Markt Preis Morgen Fenster",
    "it": "il lo la i gli le di da in con su per tra fra un una uno e che non si è sono come anche più "
    "ma ho hai ha abbiamo questo quello tempo anno giorno casa mondo vita lavoro città paese domanda "
    "risposta ragione mercato prezzo mattina finestra giardino fiume numero persona strada libro",
    "pt": "o a os as de do da em um uma e que não se por com para mais como mas foi ao ele das tem à seu "
    "sua ou ser quando muito há nos já está eu também só pelo pela até isso tempo ano dia casa mundo "
    "vida trabalho cidade país pergunta resposta razão mercado preço manhã janela jardim rio livro",
    "nl": "de het een en van in is dat op te zijn voor met niet aan er maar om ook als dan bij nog uit "
    "wat door naar zo worden kan tijd jaar dag huis wereld leven werk stad land vraag antwoord reden "
    "markt prijs ochtend raam tuin rivier boek weg mensen water getal eerste lang gemaakt vinden",
    "pl": "i w nie na się z do to że jest jak po co tak za od ale być jego jej ich przez czy już tylko "
    "może dla gdy czas rok dzień dom świat życie praca miasto kraj pytanie odpowiedź powód rynek cena "
    "rano okno ogród rzeka książka droga ludzie woda liczba pierwszy długi zrobiony znaleźć",
    "ru": "и в не на я быть он с что а по это она этот к но они мы как из у который то за свой весь год "
    "от так о для ты же все тот мочь вы человек такой его сказать только или время день дом мир жизнь "
    "работа город страна вопрос ответ причина рынок цена утро окно сад река книга дорога вода число",
    "tr": "bir ve bu da de için ile ne daha çok olarak gibi ama en kadar sonra her şey var yok zaman yıl "
    "gün ev dünya hayat iş şehir ülke soru cevap neden pazar fiyat sabah pencere bahçe nehir kitap yol "
    "insanlar su sayı ilk uzun yapılmış bulmak çünkü arasında sistem sorun sonuç",
    "ja": "私 あなた これ それ あれ 今日 明日 昨日 時間 年 日 家 世界 生活 仕事 町 国 質問 答え 理由 市場 値段 朝 窓 庭 川 本 道 "
    "人々 水 数 最初 長い 作る 見つける です ます して いる ある なる こと もの ため から まで より",
    "zh": "我 你 他 她 我们 这 那 是 的 了 在 有 和 不 人 时间 年 天 家 世界 生活 工作 城市 国家 问题 回答 原因 市场 价格 早上 "
    "窗户 花园 河 书 路 水 数字 第一 长 做 找到 因为 之间 系统 结果 可以 需要 已经 还是",
    "ko": "나 너 우리 이 그 저 것 수 있다 없다 하다 되다 시간 년 날 집 세계 생활 일 도시 나라 질문 대답 이유 시장 가격 아침 창문 "
    "정원 강 책 길 사람들 물 숫자 처음 긴 만들다 찾다 왜냐하면 사이 시스템 문제 결과",
    "ar": "في من على إلى أن هذا هذه التي الذي كان لا ما هو هي مع عن كل بعد قد بين وقت سنة يوم بيت عالم حياة "
    "عمل مدينة بلد سؤال جواب سبب سوق سعر صباح نافذة حديقة نهر كتاب طريق ناس ماء رقم أول طويل",
    "hi": "और का की के है में से को एक यह वह पर भी नहीं तो हैं था कि जो कर लिए समय साल दिन घर दुनिया जीवन काम "
    "शहर देश सवाल जवाब कारण बाजार कीमत सुबह खिड़की बगीचा नदी किताब रास्ता लोग पानी संख्या पहला लंबा",
}
NO_SPACES = {"ja", "zh"}  # written without spaces between words
SENTENCE_END = {"ja": "。", "zh": "。"}
SYLLABLES = "ka ri to ne mu sa lo vi de pa zu fe go hi jo ba te ul or an es in".split()
TURN_WEIGHTS = {1: 4, 2: 3, 3: 3}
DEVELOPER_SHARE = 0.3  # conversations with a developer message
WORDS = {lang: text.split() for lang, text in VOCABULARY.items()}


def _word(rng: random.Random, lang: str) -> str:
    draw = rng.random()
    if draw < 0.06:
        return str(rng.randint(0, 9999)) if rng.random() < 0.7 else f"{rng.uniform(0, 100):.2f}"
    if draw < 0.12:
        return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
    return rng.choice(WORDS[lang])


def _sentence(rng: random.Random, lang: str, n_words: int) -> str:
    words = [_word(rng, lang) for _ in range(n_words)]
    if lang in NO_SPACES:
        return "".join(words) + SENTENCE_END[lang]
    words[0] = words[0][:1].upper() + words[0][1:]
    if n_words > 8 and rng.random() < 0.5:
        cut = rng.randint(3, n_words - 3)
        words[cut] += ","
    return " ".join(words) + rng.choice(".....?!:")


def text_of(rng: random.Random, lang: str, n_words: int, lists: bool = False) -> str:
    """About n_words words of sentences, in paragraphs; with `lists`, some paragraphs are bullets."""
    paragraphs, sentences, left = [], [], max(1, n_words)
    while left > 0:
        n = min(left, rng.randint(5, 18))
        sentences.append(_sentence(rng, lang, n))
        left -= n
        if len(sentences) >= rng.randint(3, 6) or left <= 0:
            if lists and len(sentences) > 2 and rng.random() < 0.3:
                paragraphs.append("\n".join(f"- {s}" for s in sentences))
            else:
                paragraphs.append(" ".join(sentences) if lang not in NO_SPACES else "".join(sentences))
            sentences = []
    return "\n\n".join(paragraphs)


def tokens_per_word(encode_batch, seed: int) -> dict[str, float]:
    """o200k tokens per generated word, per language, measured on a seeded sample."""
    rng = random.Random(f"calibrate-{seed}")
    samples = {lang: [text_of(rng, lang, 120, lists=True) for _ in range(40)] for lang in WORDS}
    ratios = {}
    for lang, texts in samples.items():
        ratios[lang] = sum(len(ids) for ids in encode_batch(texts)) / (120 * len(texts))
    return ratios


def conversation(rng: random.Random, target: int, ratios: dict[str, float]) -> dict:
    lang = rng.choice(sorted(WORDS))
    thinking_lang = "en" if rng.random() < 0.5 else lang

    def text(language: str, tokens: float, lists: bool = False) -> str:
        return text_of(rng, language, max(1, round(tokens / ratios[language])), lists)

    budget = target * rng.uniform(0.9, 1.1)
    messages = []
    if rng.random() < DEVELOPER_SHARE:
        share = rng.uniform(0.03, 0.08) * budget
        messages.append({"role": "developer", "content": text(lang, share)})
        budget -= share
    turns = rng.choices(list(TURN_WEIGHTS), weights=list(TURN_WEIGHTS.values()))[0]
    for _ in range(turns):
        per_turn = budget / turns
        user, thinking = rng.uniform(0.1, 0.3), rng.uniform(0.3, 0.5)
        messages.append({"role": "user", "content": text(lang, per_turn * user)})
        messages.append(
            {
                "role": "assistant",
                "thinking": text(thinking_lang, per_turn * thinking),
                "content": text(lang, per_turn * (1 - user - thinking), lists=True),
            }
        )
    return {"messages": messages}


def write_conversations(path: Path, n: int, target: int, seed: int, encode_batch) -> dict:
    """Write the jsonl; return facts about it (measured token counts of the message texts)."""
    ratios = tokens_per_word(encode_batch, seed)
    rng = random.Random(seed)
    rows = [conversation(rng, target, ratios) for _ in range(n)]
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    texts = [m.get(k) for row in rows for m in row["messages"] for k in ("content", "thinking") if m.get(k)]
    lengths = iter(len(ids) for ids in encode_batch(texts))
    per_row = []
    for row in rows:
        parts = sum(1 for m in row["messages"] for k in ("content", "thinking") if m.get(k))
        per_row.append(sum(next(lengths) for _ in range(parts)))
    turns = [sum(m["role"] == "user" for m in row["messages"]) for row in rows]
    return {
        "rows": n,
        "mean_tokens": sum(per_row) / n,
        "min_tokens": min(per_row),
        "max_tokens": max(per_row),
        "turns": {t: turns.count(t) for t in sorted(set(turns))},
        "with_developer": sum(row["messages"][0]["role"] == "developer" for row in rows),
        "bytes": path.stat().st_size,
    }


# ---------------------------------------------------------------------------------------------
# The three measurements


@dataclass
class Result:
    name: str
    samples: list[float]  # seconds of each repetition
    examples: int
    tokens: int
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """The best time: other work on the machine can only add to a run's time, never take from it."""
        return min(self.samples)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("inf")


def timed(function):
    gc.collect()
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def count_tokens(dataset) -> int:
    import pyarrow.compute as pc

    total = 0
    for batch in dataset.select_columns(["input_ids"]).with_format("arrow").iter(batch_size=2048):
        total += pc.sum(pc.list_value_length(batch["input_ids"])).as_py() or 0
    return total


def write_recipe(folder: Path, data_file: Path, tokenizer_dir: Path, num_proc: int) -> Path:
    recipe = {
        "model": {"base_model": "benchmark/unused-model", "tokenizer": str(tokenizer_dir)},
        "data": {
            "datasets": [{"path": str(data_file), "format": "messages"}],
            "num_proc": num_proc,
            "cache_dir": str(folder / "ossft-cache"),  # replaced per repetition
        },
        "train": {"max_length": MAX_LENGTH},
        "output": {"dir": str(folder / "out")},
    }
    path = folder / "bench.yaml"
    path.write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")  # JSON is YAML
    return path


# Each timed run happens in a process of its own (this script, `--worker KIND`), as a real
# `ossft train` or `trl sft` would: no run inherits another's memory, threads or garbage.


def ossft_worker(folder: Path, rep: int, cached: bool) -> dict:
    """One `prepare_data` call: into the empty cache folder of repetition `rep`, or from it."""
    from ossft.data.prepare import prepare_data
    from ossft.model.load import load_tokenizer
    from ossft.recipe.load import load_recipe

    recipe = load_recipe(folder / "bench.yaml")
    recipe.data.cache_dir = str(folder / f"ossft-cache-{rep}")
    tokenizer = load_tokenizer(recipe)
    prepared, seconds = timed(lambda: prepare_data(recipe, tokenizer))
    if prepared.from_cache != cached:
        raise RuntimeError(f"expected from_cache={cached} in {recipe.data.cache_dir}, got {prepared.from_cache}")
    stats = prepared.stats
    return {
        "seconds": seconds,
        "examples": len(prepared.train),
        "tokens": count_tokens(prepared.train),
        "note": f"{stats.rows} rows -> {stats.examples} examples, "
        f"{stats.dropped_too_long + stats.rows_skipped} dropped or skipped",
    }


def tiny_gpt_oss(vocab_size: int):
    """A random GptOssForCausalLM with the real vocabulary size and almost nothing else."""
    import torch
    from transformers import GptOssConfig, GptOssForCausalLM

    torch.manual_seed(0)
    config = GptOssConfig(
        vocab_size=vocab_size,
        hidden_size=8,
        intermediate_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=4,
        num_local_experts=2,
        num_experts_per_tok=1,
        layer_types=["sliding_attention", "full_attention"],
    )
    return GptOssForCausalLM(config)


def trl_worker(folder: Path, rep: int, num_proc: int) -> dict:
    """load_dataset("json") + SFTTrainer._prepare_dataset of the whole file, datasets' cache off."""
    import datasets
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    data_file = folder / DATA_FILE
    tokenizer = AutoTokenizer.from_pretrained(str(folder / TOKENIZER_DIR), local_files_only=True)
    with data_file.open(encoding="utf-8") as f:  # one row per process, so that datasets does not complain
        first_rows = [json.loads(line) for line, _ in zip(f, range(num_proc))]
    args = SFTConfig(
        output_dir=str(folder / "trl-out"),
        max_length=MAX_LENGTH,
        # None (TRL's default) maps in this process; datasets forks a pool even for num_proc=1.
        dataset_num_proc=num_proc if num_proc > 1 else None,
        assistant_only_loss=False,
        packing=False,
        report_to="none",
        use_cpu=True,
        gradient_checkpointing=None,  # transformers 5.2x warns when the deprecated name carries a value
    )
    # Built around a row or two: its own preparation of those is not what is timed.
    trainer = SFTTrainer(
        model=tiny_gpt_oss(len(tokenizer)),
        args=args,
        train_dataset=datasets.Dataset.from_list(first_rows),
        processing_class=tokenizer,
    )
    datasets.disable_caching()  # every map really runs (its results go to temporary files)
    cache = str(folder / f"hf-datasets-{rep}")  # load_dataset's own Arrow cache: a fresh one
    rows, load_s = timed(
        lambda: datasets.load_dataset("json", data_files=str(data_file), split="train", cache_dir=cache)
    )
    prepared, prepare_s = timed(lambda: trainer._prepare_dataset(rows, tokenizer, trainer.args, False, None, "train"))
    return {
        "seconds": load_s + prepare_s,
        "load_seconds": load_s,
        "examples": len(prepared),
        "tokens": count_tokens(prepared),
        "note": f"{len(rows)} rows -> {len(prepared)} examples",
    }


def run_worker(kind: str, folder: Path, rep: int, num_proc: int) -> dict:
    out = folder / f"result-{kind}-{rep}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--workdir", str(folder)]
    command += ["--rep", str(rep), "--num-proc", str(num_proc), "--result", str(out)]
    done = subprocess.run(command)
    if done.returncode != 0:
        raise RuntimeError(f"the {kind} run {rep} failed (exit code {done.returncode}); its output is above")
    return json.loads(out.read_text())


def measure(folder: Path, num_proc: int, repeat: int) -> list[Result]:
    """ossft, ossft from its cache, TRL: `repeat` rounds, each run in a new process."""
    runs: dict[str, list[dict]] = {"ossft": [], "ossft-cached": [], "trl": []}
    for rep in range(repeat):
        for kind in runs:
            runs[kind].append(run_worker(kind, folder, rep, num_proc))
            print(f"  round {rep + 1}/{repeat}: {kind} {runs[kind][-1]['seconds']:.3f} s", file=sys.stderr)
    results = []
    for kind, name in (("ossft", "ossft"), ("ossft-cached", "ossft (cached)"), ("trl", "TRL")):
        done = runs[kind]
        if len({(r["examples"], r["tokens"]) for r in done + runs["ossft"] * (kind != "trl")}) != 1:
            raise RuntimeError(f"the {name} runs returned different data: {done}")
        result = Result(name, [r["seconds"] for r in done], done[0]["examples"], done[0]["tokens"])
        if kind == "ossft":
            result.notes.append(done[0]["note"])
        if kind == "trl":
            best = min(done, key=lambda r: r["seconds"])
            result.notes.append(
                f"load_dataset('json') {best['load_seconds']:.2f} s + SFTTrainer._prepare_dataset "
                f"{best['seconds'] - best['load_seconds']:.2f} s (best run); {done[0]['note']}"
            )
        results.append(result)
    return results


def worker_main(args: argparse.Namespace) -> int:
    os.environ["HF_DATASETS_CACHE"] = str(args.workdir / f"hf-datasets-{args.worker}-{args.rep}")
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    if args.worker == "trl":
        result = trl_worker(args.workdir, args.rep, args.num_proc)
    else:
        result = ossft_worker(args.workdir, args.rep, cached=args.worker == "ossft-cached")
    args.result.write_text(json.dumps(result), encoding="utf-8")
    return 0


# ---------------------------------------------------------------------------------------------
# Report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def versions(packages: tuple[str, ...] = ("torch", "transformers", "trl", "datasets", "tokenizers")) -> dict[str, str]:
    """Python's and each package's version, then ossft's with its git state (shared by every bench script)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in (*packages, "ossft"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    found["ossft"] += f" ({git_state()})"
    return found


def git_state() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"git {commit}" + (" + uncommitted changes" if dirty else "")


def report(results: list[Result], facts: dict, meta: dict) -> str:
    fresh, cached, trl = results
    turns = ", ".join(f"{t}: {n:,}" for t, n in facts["turns"].items())
    lines = [
        f"## Data preparation: {facts['rows']:,} conversations, num_proc {meta['num_proc']} ({meta['date']})",
        "",
        f"- machine: {meta['cpu']}, {meta['cores']} cores usable ({meta['cpu_count']} online), {meta['system']}; "
        f"1-minute load average {meta['load_before']} before the timed runs, {meta['load_after']} after",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- command: `{meta['command']}`",
        f"- data: {facts['rows']:,} conversations, {facts['bytes'] / 1e6:.1f} MB of jsonl; message text "
        f"{facts['mean_tokens']:.0f} o200k tokens on average (min {facts['min_tokens']}, max {facts['max_tokens']}); "
        f"turns {turns}; {facts['with_developer']:,} with a developer message; seed {meta['seed']}",
        "",
        "| run | seconds | examples | tokens | tokens/s | conversations/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.seconds:.3f} | {r.examples} | {r.tokens} | {r.tokens_per_s:.0f} | {facts['rows'] / r.seconds:.1f} |"
        )
    speed = fresh.tokens_per_s / trl.tokens_per_s
    per_row = trl.seconds / fresh.seconds
    cache_gain = fresh.seconds / cached.seconds
    lines += [
        "",
        f"- ossft / TRL tokens/s: **{speed:.2f}x** (goal >= 2x: {'met' if speed >= 2 else 'not met'})",
        f"- ossft / TRL conversations/s: {per_row:.2f}x",
        f"- first / cached ossft time: **{cache_gain:.1f}x** (goal >= 20x: {'met' if cache_gain >= 20 else 'not met'})",
        *(f"- {r.name}: {note}" for r in results for note in r.notes),
        *(
            [
                f"- seconds are the best of {len(fresh.samples)} runs each, which took "
                + "; ".join(f"{r.name} " + ", ".join(f"{x:.3f}" for x in r.samples) for r in results)
            ]
            if len(fresh.samples) > 1
            else []
        ),
        "",
    ]
    return "\n".join(lines)


MARKDOWN_HEADER = """# Benchmarks

Measured results of `scripts/bench/data_prep.py`, which times how fast ossft turns conversations
into training-ready token ids (`ossft.data.prepare.prepare_data`: read the file, check the rows, render
harmony, tokenize with the real o200k_harmony tokenizer, mask, save to the on-disk cache), how
fast a second run loads the same result from that cache, and how fast TRL prepares the same rows
(`datasets.load_dataset("json")` + `SFTTrainer._prepare_dataset` with the Hugging Face chat
template). The data is synthetic and seeded, so a run is reproduced by its command. From the
repository root, with the fixtures of `../shared/fixtures` present:

    .venv/bin/python scripts/bench/data_prep.py --conversations 10000 --num-proc 1 --repeat 3 --markdown BENCHMARKS.md

Each run appends a section below that names its own command, machine and versions. Every timed
run is a new process. With `--repeat 3` the table holds the best of the three times of each run
(other work on the machine can only add time) and the notes list every time, with the machine's
load average before and after.

How to read the numbers. Tokens are those of the prepared training datasets, and the two sides
do not make the same examples: ossft (`thinking: per_turn`, `train_on: all_turns`) makes one
example per assistant turn, each with the conversation before it, so a 3-turn conversation gives
3 examples; TRL makes one sequence per conversation, and the Hugging Face template keeps only the
last turn's thinking. tokens/s is tokenization throughput; conversations/s compares the same
input. With `--num-proc 1` neither side forks (TRL gets `dataset_num_proc=None`, its default), but
ossft tokenizes in one batch call, which the tokenizers library spreads over all cores with its
own threads, while TRL encodes one conversation at a time on one core.

"""


def append_markdown(path: Path, section: str) -> None:
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    with path.open("a", encoding="utf-8") as f:
        if not existing.strip():
            f.write(MARKDOWN_HEADER)
        elif not existing.endswith("\n\n"):
            f.write("\n" if existing.endswith("\n") else "\n\n")
        f.write(section)


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time ossft's data preparation (fresh and cached) against TRL's on synthetic conversations.",
        epilog="Example: .venv/bin/python scripts/bench/data_prep.py --conversations 10000 --markdown BENCHMARKS.md",
    )
    parser.add_argument("--conversations", type=int, default=10_000, help="conversations to generate (default 10000)")
    parser.add_argument(
        "--target-tokens", type=int, default=1000, help="o200k tokens of text per conversation (default 1000)"
    )
    parser.add_argument(
        "--num-proc", type=int, default=1, help="processes for both ossft (data.num_proc) and TRL (default 1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data (default 0)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="time each of the three runs this many times; report the best (default 1)"
    )
    parser.add_argument("--markdown", type=Path, help="append the result section to this Markdown file")
    # Internal: one timed run in a process of its own (see measure()).
    parser.add_argument("--worker", choices=["ossft", "ossft-cached", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rep", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("conversations", "target_tokens", "num_proc", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.target_tokens * 1.2 + 500 > MAX_LENGTH:
        parser.error(f"--target-tokens {args.target_tokens} would not fit train.max_length {MAX_LENGTH}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO))
    if args.worker:
        return worker_main(args)
    from tests.o200k import gpt_oss_tokenizer_available, load_gpt_oss_tokenizer

    if not gpt_oss_tokenizer_available():
        print(
            "skipped: the real gpt-oss tokenizer cannot be built here. It needs ../shared/fixtures/gpt-oss-tokenizer "
            "(o200k_base.tiktoken.gz, special_tokens.json, chat_template.jinja) and tiktoken with o200k_harmony.",
            file=sys.stderr,
        )
        return SKIP_EXIT

    folder = Path(tempfile.mkdtemp(prefix="ossft-bench-"))
    try:
        meta = {**run_facts(__file__), "num_proc": args.num_proc, "seed": args.seed}
        reference = load_gpt_oss_tokenizer()
        reference.save_pretrained(str(folder / TOKENIZER_DIR))

        def encode_batch(texts: list[str]) -> list[list[int]]:
            return reference(texts, add_special_tokens=False)["input_ids"]

        data_file = folder / DATA_FILE
        start = time.perf_counter()
        facts = write_conversations(data_file, args.conversations, args.target_tokens, args.seed, encode_batch)
        print(
            f"wrote {facts['rows']:,} conversations ({facts['mean_tokens']:.0f} tokens of text on average) "
            f"in {time.perf_counter() - start:.1f} s; timing, each run in a new process ...",
            file=sys.stderr,
        )
        write_recipe(folder, data_file, folder / TOKENIZER_DIR, args.num_proc)
        meta["load_before"] = load_average()
        fresh, cached, trl = measure(folder, args.num_proc, args.repeat)
        meta["load_after"] = load_average()

        section = report([fresh, cached, trl], facts, meta)
        print(section)
        if args.markdown is not None:
            append_markdown(args.markdown, section)
            print(f"appended to {args.markdown}", file=sys.stderr)
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_facts(script: str, packages: tuple[str, ...] | None = None) -> dict:
    """What every bench section opens with: when, on which machine, with which versions, by which command."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "versions": versions(packages) if packages else versions(),
        "command": shlex.join([_as_typed(Path(sys.executable)), _as_typed(Path(script)), *sys.argv[1:]]),
    }


def _as_typed(path: Path) -> str:
    """A path as one would type it from the repository root (the interpreter: its venv path, unresolved)."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(REPO))
    except ValueError:
        return str(absolute)


if __name__ == "__main__":
    sys.exit(main())
