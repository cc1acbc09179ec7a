"""The cloud templates in scripts/ (SkyPilot, Slurm, Baseten).

Each one is parsed as its tool would read it, its `ossft train RECIPE` command is found, the recipe
must exist and load (with the command's --set overrides), and the nodes and GPUs the template asks for
must be the ones the recipe's launch: section counts. Nothing is launched: SkyPilot, Slurm and truss
are not installed here.
"""

from __future__ import annotations

import ast
import functools
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ossft.recipe.load import load_recipe

from .conftest import REPO

pytestmark = pytest.mark.cloud

SCRIPTS = REPO / "scripts"
TEMPLATE_DIRS = ("skypilot", "slurm", "baseten")

# Top-level keys of a SkyPilot task YAML (docs.skypilot.co, reference/yaml-spec): a misspelt one is an error.
SKYPILOT_KEYS = {
    "name", "workdir", "num_nodes", "resources", "envs", "secrets", "volumes", "file_mounts",
    "setup", "run", "config", "service", "event_callback",
}  # fmt: skip
# Values the job environment gives these variables at run time; stand-ins so --set overrides can load.
RUNTIME_ENV = {"BT_CHECKPOINT_DIR": "/bt/checkpoints"}
LEAKED_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{20,}")


@dataclass(frozen=True)
class TrainCommand:
    recipe: str  # as written, relative to the repository root
    overrides: tuple[str, ...]  # the KEY=VALUE of each --set
    other_options: tuple[str, ...]  # any other --option: launch flags the environment should supply


@dataclass(frozen=True)
class Template:
    commands: tuple[TrainCommand, ...]
    nodes: int
    gpus_per_node: int
    disk_gb: int | None = None  # per node, where the template sets it


def expand(text: str, env: dict[str, str]) -> str:
    """$VAR and ${VAR} from env; an unknown variable is a test failure, not an empty string."""

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        assert name in env, f"${name} is used but the template gives it no value"
        return env[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def train_commands(script: str, env: dict[str, str]) -> tuple[TrainCommand, ...]:
    """Every `... ossft train RECIPE [--set K=V ...]` in a shell script (comments skipped)."""
    found = []
    for line in script.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for segment in re.split(r";|&&|\|\|", line):
            argv = shlex.split(segment)
            for i, word in enumerate(argv[:-2]):
                if Path(word).name == "ossft" and argv[i + 1] == "train":
                    found.append(parse_train_args(argv[i + 2 :], env))
    return tuple(found)


def parse_train_args(args: list[str], env: dict[str, str]) -> TrainCommand:
    recipe, rest = expand(args[0], env), args[1:]
    overrides, others = [], []
    while rest:
        word = rest.pop(0)
        if word == "--set":
            overrides.append(expand(rest.pop(0), {**env, **RUNTIME_ENV}))
        elif word.startswith("--"):
            others.append(word)
    return TrainCommand(recipe, tuple(overrides), tuple(others))


def gpu_count(spec: str) -> int:
    """'H100:8' -> 8, 'H100' -> 1 (SkyPilot and Slurm --gpus-per-node both write it so)."""
    return int(spec.rsplit(":", 1)[1]) if ":" in spec else int(spec)


# ---------------------------------------------------------------------------------------------
# One reader per tool


def read_skypilot(path: Path) -> Template:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), f"{path.name}: a SkyPilot task is a mapping"
    assert set(doc) <= SKYPILOT_KEYS, f"{path.name}: unknown keys {sorted(set(doc) - SKYPILOT_KEYS)}"
    assert doc["workdir"] == ".", "the repository is the workdir: launched from its root"
    assert "bash scripts/setup.sh" in doc["setup"]
    assert doc["secrets"] == {"HF_TOKEN": None}, "HF_TOKEN is a secret passed with --secret, never a value"
    env = {k: str(v) for k, v in (doc.get("envs") or {}).items()}
    accelerators = doc["resources"]["accelerators"]
    assert isinstance(accelerators, str) and accelerators.startswith("H"), accelerators
    return Template(
        commands=train_commands(doc["run"], env),
        nodes=doc.get("num_nodes", 1),
        gpus_per_node=gpu_count(accelerators),
        disk_gb=doc["resources"].get("disk_size"),
    )


def sbatch_options(text: str) -> dict[str, str]:
    """#SBATCH --key=value lines; sbatch reads them only before the first command, so they must be there."""
    options, seen_command = {}, False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#SBATCH"):
            assert not seen_command, f"line {number}: #SBATCH after the first command is ignored by sbatch"
            key, _, value = line.split(maxsplit=1)[1].partition("=")
            assert key.startswith("--"), f"line {number}: expected #SBATCH --option[=value], got {line!r}"
            options[key[2:]] = value
        elif line.strip() and not line.startswith("#"):
            seen_command = True
    return options


def read_slurm(path: Path) -> Template:
    text = path.read_text(encoding="utf-8")
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    assert text.startswith("#!/usr/bin/env bash\n")
    options = sbatch_options(text)
    assert options["ntasks-per-node"] == "1", "one task per node: ossft starts accelerate on each node itself"
    assert "exclusive" in options
    assert 'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)' in text
    assert re.search(r"^export MASTER_ADDR MASTER_PORT$", text, re.M)
    # VAR=${VAR:-default} lines: the defaults the srun line sees when the caller exports nothing.
    env = dict(re.findall(r"^(\w+)=\$\{\1:-([^}]*)\}$", text, re.M))
    srun_lines = [line for line in text.splitlines() if line.startswith("srun ")]
    assert len(srun_lines) == 1, srun_lines
    commands = train_commands(srun_lines[0], env)
    assert commands == train_commands(text, env), "`ossft train` runs only under srun"
    return Template(commands, nodes=int(options["nodes"]), gpus_per_node=gpu_count(options["gpus-per-node"]))


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """Calls of NAME, whether written `definitions.NAME(...)`, `truss_config.NAME(...)` or `NAME(...)`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) == name:
                found.append(node)
    return found


def keyword(call: ast.Call, name: str, default=None):
    return next((ast.literal_eval(k.value) for k in call.keywords if k.arg == name), default)


def read_baseten(path: Path) -> Template:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert ast.get_docstring(tree) and "truss train push scripts/baseten/config.py" in ast.get_docstring(tree)
    (runtime,) = calls(tree, "Runtime")
    start = keyword(runtime, "start_commands")
    assert isinstance(start, list) and start, "Runtime(start_commands=[...]) with literal strings"
    commands = []
    for command in start:
        argv = shlex.split(command)
        assert argv[:2] == ["/bin/bash", "-c"] and len(argv) == 3, argv
        syntax = subprocess.run(["bash", "-n", "-c", argv[2]], capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr
        commands += train_commands(argv[2], {})
    (checkpointing,) = calls(tree, "CheckpointingConfig")
    assert keyword(checkpointing, "enabled") is True, "checkpointing defines BT_CHECKPOINT_DIR"
    secret = next(k.value for k in runtime.keywords if k.arg == "environment_variables")
    hf_token = secret.values[[ast.literal_eval(k) for k in secret.keys].index("HF_TOKEN")]
    assert isinstance(hf_token, ast.Call) and calls(hf_token, "SecretReference"), "HF_TOKEN from Baseten secrets"
    (workspace,) = calls(tree, "Workspace")
    assert (path.parent / keyword(workspace, "workspace_root")).resolve() == REPO, "the whole repository is uploaded"
    (compute,) = calls(tree, "Compute")
    (accelerator,) = calls(tree, "AcceleratorSpec")
    return Template(
        tuple(commands), nodes=keyword(compute, "node_count", 1), gpus_per_node=keyword(accelerator, "count")
    )


TEMPLATES = {
    "skypilot/one-node.yaml": read_skypilot,
    "skypilot/multi-node.yaml": read_skypilot,
    "slurm/multi-node.sbatch": read_slurm,
    "baseten/config.py": read_baseten,
}


@functools.cache
def read(name: str) -> Template:
    return TEMPLATES[name](SCRIPTS / name)


@functools.cache
def recipe_of(command: TrainCommand):
    return load_recipe(REPO / command.recipe, list(command.overrides))


# ---------------------------------------------------------------------------------------------


def test_every_cloud_template_is_tested():
    on_disk = {
        str(p.relative_to(SCRIPTS))
        for d in TEMPLATE_DIRS
        for p in (SCRIPTS / d).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert on_disk == set(TEMPLATES)


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_trains_one_shipped_recipe(name):
    template = read(name)
    assert len(template.commands) == 1, template.commands
    (command,) = template.commands
    assert command.recipe.startswith("recipes/") and command.recipe.endswith(".yaml"), command.recipe
    assert (REPO / command.recipe).is_file(), f"{name} trains {command.recipe}, which is not in recipes/"
    recipe_of(command)  # raises UserError with the line and key if the recipe (or a --set) is wrong
    assert command.other_options == (), "launch flags come from the environment, not the template"


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_asks_for_the_gpus_the_recipe_counts(name):
    template = read(name)
    launch = recipe_of(template.commands[0]).launch
    assert launch.num_processes is not None, "the recipe must say how many processes it wants"
    # accelerate counts num_processes over all machines.
    assert (template.nodes, template.gpus_per_node) == (
        launch.num_machines,
        launch.num_processes // launch.num_machines,
    )
    assert template.nodes * template.gpus_per_node == launch.num_processes


@pytest.mark.parametrize("name", [n for n in TEMPLATES if n.startswith("skypilot/")])
def test_skypilot_disk_holds_the_checkpoints(name):
    template = read(name)
    recipe = recipe_of(template.commands[0])
    # ossft plan's disk figures: one checkpoint for each kept (save_total_limit) and one more while it is
    # written, plus the final save (fp32 under FSDP2: a 120b checkpoint is ~1.4 TB). LoRA checkpoints are small.
    from ossft.launch.plan import checkpoint_bytes, layout_for

    checkpoint, final = checkpoint_bytes(recipe, layout_for(recipe))
    limit = recipe.train.save_total_limit
    kept = limit + 1 if limit else 1  # without a limit: the 20b recipe saves once, at its one epoch's end
    needed_gb = 0 if recipe.lora is not None else (checkpoint * kept + final) / 1e9
    assert template.disk_gb * template.nodes >= needed_gb


def test_baseten_writes_into_its_checkpoint_folder():
    (command,) = read("baseten/config.py").commands
    assert command.overrides == ("output.dir=/bt/checkpoints",)
    assert recipe_of(command).output.dir == "/bt/checkpoints"


@pytest.mark.parametrize("name", TEMPLATES)
def test_no_token_is_written_in_a_template(name):
    assert not LEAKED_HF_TOKEN.search((SCRIPTS / name).read_text(encoding="utf-8"))
