"""The recipe: loading, defaults, overrides, and every kind of bad input (exit 2, key, line)."""

from __future__ import annotations

import json

import pytest
import yaml

from ossft.errors import UserError
from ossft.recipe.load import apply_overrides, dump_recipe, load_recipe, recipe_json_schema

from .conftest import REPO

QUICKSTART = (REPO / "recipes" / "quickstart.yaml").read_text()


def line_of(text: str, fragment: str) -> int:
    """1-based line of the first line containing `fragment` (so tests follow edits of the recipe)."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if fragment in line)


def replace_line(fragment: str, new: str) -> str:
    """The quickstart recipe with the line containing `fragment` replaced by `new`."""
    lines = QUICKSTART.splitlines()
    lines[line_of(QUICKSTART, fragment) - 1] = new
    return "\n".join(lines) + "\n"


def test_quickstart_loads_with_every_default_filled(quickstart_recipe):
    r = quickstart_recipe
    assert r.model.base_model == "models/tiny-gpt-oss"
    assert r.model.attn_implementation == "eager"
    assert (
        r.lora.r == 8 and r.lora.experts == "all" and r.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    assert r.train.learning_rate == pytest.approx(3e-3)  # written 3e-3: a float, not YAML 1.1's string
    assert r.train.lr_scheduler_type == "cosine"
    assert r.train.adam_beta2 == 0.999  # a TRL default the recipe does not mention
    assert r.data.datasets[0].format == "auto" and r.data.chat_format == "harmony" and r.data.thinking == "per_turn"
    assert r.output.dir == "outputs/quickstart"
    assert r.launch.num_machines == 1


def test_validate_prints_resolved_recipe_that_reloads_identically(cli, tmp_path, quickstart_recipe):
    result = cli("validate", REPO / "recipes" / "quickstart.yaml")
    assert result.exit_code == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["train"]["weight_decay"] == 0.0 and resolved["model"]["trust_remote_code"] is False
    assert set(resolved) == {"model", "lora", "data", "train", "output", "guards", "launch"}
    copy = tmp_path / "resolved.yaml"
    copy.write_text(result.stdout)
    assert load_recipe(copy) == quickstart_recipe


def test_output_dir_defaults_to_recipe_name(tmp_path):
    path = tmp_path / "my-run.yaml"
    path.write_text("model: {base_model: m}\ndata: {datasets: [{path: d.jsonl}]}\n")
    recipe = load_recipe(path)
    assert recipe.output.dir == "outputs/my-run"
    assert recipe.lora is None  # no lora: section means full fine-tuning


@pytest.mark.parametrize(
    ("override", "check"),
    [
        ("train.learning_rate=1e-4", lambda r: r.train.learning_rate == pytest.approx(1e-4)),
        ("train.per_device_train_batch_size=2", lambda r: r.train.per_device_train_batch_size == 2),
        ("lora.experts=[0, 1]", lambda r: r.lora.experts == [0, 1]),
        ("train.packing=true", lambda r: r.train.packing is True),
        ("model.dtype=bfloat16", lambda r: r.model.dtype == "bfloat16"),
        ("data.datasets.0.path=other.jsonl", lambda r: r.data.datasets[0].path == "other.jsonl"),
        ("launch.num_processes=8", lambda r: r.launch.num_processes == 8),
    ],
)
def test_overrides_are_typed(override, check):
    assert check(load_recipe(REPO / "recipes" / "quickstart.yaml", [override]))


def test_overrides_apply_in_order_and_create_sections():
    data = {"train": {"seed": 1}}
    applied = apply_overrides(data, ["train.seed=2", "train.seed=3", "lora.r=4"])
    assert data == {"train": {"seed": 3}, "lora": {"r": 4}}
    assert applied == {("train", "seed"): "train.seed=3", ("lora", "r"): "lora.r=4"}


BROKEN = [
    # (name, recipe text, fragments the message must contain)
    (
        "misspelt key",
        replace_line("learning_rate:", "  learnig_rate: 3e-3"),
        ["train.learnig_rate", f"line {line_of(QUICKSTART, 'learning_rate:')}", "Did you mean 'learning_rate'"],
    ),
    (
        "misspelt section",
        QUICKSTART.replace("\nlora:", "\nlroa:"),
        ["unknown key 'lroa'", f"line {line_of(QUICKSTART, 'lora:')}", "Did you mean 'lora'"],
    ),
    (
        "lora r = 0",
        replace_line("  r: 8", "  r: 0"),
        ["lora.r", f"line {line_of(QUICKSTART, '  r: 8')}", "greater than or equal to 1"],
    ),
    (
        "negative learning rate",
        replace_line("learning_rate:", "  learning_rate: -1e-4"),
        [
            "train.learning_rate",
            f"line {line_of(QUICKSTART, 'learning_rate:')}",
            "-0.0001",
            "greater than or equal to 0",
        ],
    ),
    (
        "wrong type",
        replace_line("per_device_train_batch_size", "  per_device_train_batch_size: eight"),
        [
            "train.per_device_train_batch_size",
            f"line {line_of(QUICKSTART, 'per_device_train_batch_size')}",
            "valid integer",
        ],
    ),
    (
        "bad choice",
        replace_line("lr_scheduler_type", "  lr_scheduler_type: cosin"),
        ["train.lr_scheduler_type", "'cosin'", "'cosine'", f"line {line_of(QUICKSTART, 'lr_scheduler_type')}"],
    ),
    ("tab indentation", replace_line("  r: 8", "\tr: 8"), [f"line {line_of(QUICKSTART, '  r: 8')}", "tab", "spaces"]),
    (
        "duplicate key",
        QUICKSTART.replace("  r: 8\n", "  r: 8\n  r: 4\n"),
        [
            "'lora.r' appears twice",
            f"line {line_of(QUICKSTART, '  r: 8') + 1}",
            f"first on line {line_of(QUICKSTART, '  r: 8')}",
        ],
    ),
    ("empty file", "# only a comment\n", ["is empty", "model:"]),
    ("not a mapping", "- model\n- data\n", ["line 1", "mapping of sections", "list"]),
    ("YAML syntax", "model:\n  base_model: [unclosed\n", ["not valid YAML", "line 3"]),
    ("missing section", "model:\n  base_model: m\n", ["'data' is required but missing"]),
    (
        "missing key",
        "model:\n  dtype: float32\ndata:\n  datasets: [{path: d.jsonl}]\n",
        ["'model.base_model' is required but missing", "line 1"],
    ),
    (
        "dropout with experts",
        replace_line("lora_dropout", "  lora_dropout: 0.1"),
        ["lora.experts", "lora_dropout must be 0", f"line {line_of(QUICKSTART, '  experts: all')}"],
    ),
    (
        "sdpa refused",
        replace_line("attn_implementation", "  attn_implementation: sdpa"),
        ["model.attn_implementation", "sinks", "eager", f"line {line_of(QUICKSTART, 'attn_implementation')}"],
    ),
    (
        "key owned by another section",
        QUICKSTART.replace("train:", "train:\n  output_dir: x", 1),
        ["train.output_dir", "belongs in output.dir", f"line {line_of(QUICKSTART, 'train:') + 1}"],
    ),
    (
        "out of range max_length",
        replace_line("max_length", "  max_length: 0"),
        ["train.max_length", "greater than or equal to 1"],
    ),
    ("bad experts value", replace_line("  experts: all", "  experts: some"), ["lora.experts", "'some'", "[7, 15, 23]"]),
    (
        "empty dataset list",
        QUICKSTART.replace("    - path: examples/data/chat_multilingual.jsonl", "    []").replace(
            "  datasets:\n    []", "  datasets: []"
        ),
        ["data.datasets", "at least 1 item"],
    ),
    (
        "unknown experts backend",
        replace_line("attn_implementation", "  experts_implementation: fast"),
        ["model.experts_implementation", "'fast'", "'grouped_mm'"],
    ),
    ("unicode key", replace_line("  r: 8", "  ränk: 8"), ["lora.ränk", "unknown key"]),
]


@pytest.mark.parametrize(("text", "fragments"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_recipe_exits_2_with_key_and_line(cli, tmp_path, text, fragments):
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    result = cli("validate", path)
    assert result.exit_code == 2
    message = result.stderr
    assert "Traceback" not in message and result.stdout == ""
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert len(message.splitlines()) <= 3  # a short paragraph, not a wall of text


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("train.learning_rate=abc", ["--set train.learning_rate=abc", "valid number"]),
        ("train.learnign_rate=1", ["--set train.learnign_rate=1", "Did you mean 'learning_rate'"]),
        ("learning_rate", ["expected KEY=VALUE"]),
        ("model.base_model.x=1", ["'model.base_model' is a value, not a section"]),
        ("data.datasets.3.path=x", ["index 3 is outside the list (1 items)"]),
    ],
)
def test_bad_override_exits_2(cli, override, fragments):
    result = cli("validate", REPO / "recipes" / "quickstart.yaml", "--set", override)
    assert result.exit_code == 2
    for fragment in fragments:
        assert fragment in result.stderr


def test_missing_recipe_file(cli, tmp_path):
    result = cli("validate", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "recipe not found" in result.stderr


def test_debug_flag_shows_the_traceback(cli, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(replace_line("  r: 8", "  r: 0"))
    result = cli("--debug", "validate", path)
    assert result.exit_code == 1
    assert isinstance(result.exception, UserError)
    assert "lora.r" in str(result.exception)


def test_all_sft_config_fields_are_accepted():
    import dataclasses

    from trl import SFTConfig

    from ossft.recipe.train_section import OWNED_ELSEWHERE, train_section_model

    accepted = set(train_section_model().model_fields)
    expected = {f.name for f in dataclasses.fields(SFTConfig) if f.init} - set(OWNED_ELSEWHERE)
    assert accepted == expected


def test_schema_command_prints_json_schema(cli):
    result = cli("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["required"] == ["model", "data"]
    assert schema == recipe_json_schema()
    train = schema["$defs"]["TrainSection"]["properties"]
    assert train["learning_rate"]["minimum"] == 0
    assert train["lr_scheduler_type"]["$ref"] == "#/$defs/SchedulerType"
    assert "cosine" in schema["$defs"]["SchedulerType"]["enum"]


def test_dump_is_plain_yaml(quickstart_recipe):
    text = dump_recipe(quickstart_recipe)
    assert "!!python" not in text  # enums and paths dumped as plain values
    assert yaml.safe_load(text)["train"]["lr_scheduler_type"] == "cosine"


def test_no_is_a_word_not_false(tmp_path):
    # YAML 1.1 reads no / yes / on / off as booleans; Hugging Face spells "save nothing" `no`.
    recipe = tmp_path / "r.yaml"
    recipe.write_text((REPO / "recipes" / "quickstart.yaml").read_text() + "\n")
    resolved = load_recipe(recipe, ["train.save_strategy=no", "train.eval_strategy=no", "train.bf16=false"])
    assert str(getattr(resolved.train.save_strategy, "value", resolved.train.save_strategy)) == "no"
    assert str(getattr(resolved.train.eval_strategy, "value", resolved.train.eval_strategy)) == "no"
    assert resolved.train.bf16 is False
