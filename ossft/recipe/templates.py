"""`ossft init`: a commented recipe for a model, a method and a GPU layout, made from a shipped recipe.

The recipes in recipes/ are the templates. The one for the chosen model and method is copied line by
line, comments included, and only what depends on the layout is rewritten: the header's Hardware,
Launch and Memory notes, the `launch:` section, `output.dir`, and `train.gradient_accumulation_steps`
(chosen to keep the template's global batch). These are plain text edits, not a YAML round trip,
which would drop the comments, and the comments are half of what a recipe says.

Counting: `--gpus` is GPUs per node, `--nodes` the number of nodes. `launch.num_processes` counts the
processes of the whole run, one per GPU (gpus x nodes), as accelerate's `--num_processes` does, and
`launch.num_machines` counts nodes.
"""

from __future__ import annotations

import re
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ossft.errors import UserError
from ossft.files import RECIPES_DIR, write_text_atomic
from ossft.gptoss.facts import MODEL_IDS, model_shape

METHODS = ("lora", "full")
TEMPLATES = {
    ("20b", "lora"): "gpt-oss-20b-lora-1gpu.yaml",
    ("20b", "full"): "gpt-oss-20b-full-8gpu.yaml",
    ("120b", "lora"): "gpt-oss-120b-lora-8gpu.yaml",
    ("120b", "full"): "gpt-oss-120b-full-2node-h100.yaml",
}
DEFAULTS = {"model": "20b", "method": "lora", "gpus": 1, "nodes": 1, "out": Path("recipe.yaml")}

# With several processes, FSDP2 for both: LoRA on the 3-D expert weights trains under FSDP2 as under DDP
# (peft #3080, a reshape of a sharded lora_A, does not occur: FSDP2 gathers each layer whole before its
# forward; tests/test_fsdp2.py), and it needs no DeepSpeed build.
ACCELERATE_CONFIGS = {
    "lora": ("fsdp2", "FSDP2: the bf16 base sharded over all GPUs (expert LoRA included, tests/test_fsdp2.py)"),
    "full": ("fsdp2", "FSDP2: weights, gradients and optimizer states sharded over all GPUs"),
}

# Total parameters (OpenAI's model card). The memory floor counts bf16 weights (2 bytes each); full
# fine-tuning under FSDP2 holds fp32 master weights, fp32 gradients and AdamW's two fp32 moments (16
# bytes in all, ossft/launch/memory.py). LoRA's own share is small.
BYTES_PER_PARAMETER = {"lora": 2, "full": 16}
GPU_MEMORY_GB = 80  # one H100, the smallest GPU the shipped recipes are sized for

COMMENT_COLUMN = 38  # where the shipped recipes start their end-of-line comments
FIELD = re.compile(r"^# (?P<name>Hardware|Launch|Memory):")
CONTINUATION = "#           "
KEY_LINE = re.compile(r"^(?P<code>  (?P<key>[\w-]+):.*?)(?:\s+#\s?(?P<comment>.*))?$")


def stdin_is_terminal() -> bool:
    """Whether a person can answer questions. `ossft init` asks only then; tests monkeypatch this."""
    return sys.stdin.isatty()


@dataclass
class InitChoice:
    model: str
    method: str
    gpus: int
    nodes: int
    out: Path

    @property
    def processes(self) -> int:
        return self.gpus * self.nodes

    @property
    def template(self) -> Path:
        return RECIPES_DIR / TEMPLATES[(self.model, self.method)]


@dataclass
class InitResult:
    path: Path
    template: Path
    text: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Layout:
    """How a recipe runs: processes in all, and nodes."""

    processes: int
    nodes: int


def check_values(model=None, method=None, gpus=None, nodes=None) -> None:
    """Refuse a value before anything is asked or written; None means not given."""
    if model is not None and model not in MODEL_IDS:
        raise UserError(f"--model {model}: expected one of {', '.join(MODEL_IDS)} (gpt-oss-20b or gpt-oss-120b).")
    if method is not None and method not in METHODS:
        raise UserError(f"--method {method}: expected lora (adapters) or full (every weight trained).")
    if gpus is not None and gpus < 1:
        raise UserError(f"--gpus {gpus}: expected the number of GPUs on each node, 1 or more.")
    if nodes is not None and nodes < 1:
        raise UserError(f"--nodes {nodes}: expected the number of nodes (machines), 1 or more.")


def resolve_choice(given: dict, ask=None) -> tuple[InitChoice, list[str]]:
    """Fill what `given` lacks (None): from `ask(name, default)` when there is one, else the default.

    Returns the choice and the names that took their default without asking.
    """
    check_values(given.get("model"), given.get("method"), given.get("gpus"), given.get("nodes"))
    values, defaulted = {}, []
    for name, default in DEFAULTS.items():
        value = given.get(name)
        if value is None and ask is not None:
            value = ask(name, default)
        elif value is None:
            value = default
            defaulted.append(name)
        values[name] = value
    check_values(values["model"], values["method"], values["gpus"], values["nodes"])
    return InitChoice(**{**values, "out": Path(values["out"])}), defaulted


def ask_in_terminal(name: str, default):
    """One question on the terminal; click re-asks until the answer is valid."""
    import click

    questions = {
        "model": ("Model", click.Choice(list(MODEL_IDS))),
        "method": ("Method, lora (adapters) or full (every weight)", click.Choice(list(METHODS))),
        "gpus": ("GPUs per node", click.IntRange(min=1)),
        "nodes": ("Nodes", click.IntRange(min=1)),
        "out": ("Write the recipe to", click.Path(dir_okay=False, path_type=Path)),
    }
    text, kind = questions[name]
    return click.prompt(text, default=default, type=kind)


def write_recipe(choice: InitChoice, force: bool = False) -> InitResult:
    """Render the recipe for `choice`, check that it loads, and write it atomically."""
    out = choice.out
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give the path of the YAML file to write.")
    if out.exists() and not force:
        raise UserError(f"{out} already exists; pass --force to overwrite it, or --out another file.")
    result = render_recipe(choice)
    check_rendered(result.text, choice)
    write_text_atomic(out, result.text)
    return result


def render_recipe(choice: InitChoice) -> InitResult:
    """The template's text with its layout-dependent lines rewritten for `choice` (nothing written)."""
    from ossft.recipe.load import load_recipe

    template_path = choice.template
    if not template_path.is_file():
        raise UserError(f"the shipped recipe {template_path} is missing: ossft init needs the recipes/ folder.")
    template = load_recipe(template_path)
    lines = template_path.read_text(encoding="utf-8").splitlines()
    split = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    header, body = lines[:split], lines[split:]

    was = Layout(template.launch.num_processes or 1, template.launch.num_machines)
    per_device = template.train.per_device_train_batch_size
    old_accumulation = template.train.gradient_accumulation_steps
    old_batch = per_device * old_accumulation * was.processes
    accumulation = max(1, round(old_batch / (per_device * choice.processes)))
    batch = per_device * accumulation * choice.processes

    gpus = "GPU" if choice.processes == 1 else "GPUs"
    batch_note = f"{batch} sequences per optimizer step over {choice.processes} {gpus}"
    set_value(body, "train", "gradient_accumulation_steps", str(accumulation), batch_note)
    set_value(body, "output", "dir", f"outputs/{choice.out.stem}")
    start, end = section_span(body, "launch")
    # The template's GPU, and its accelerate config where it has one (chosen for its model and method:
    # 120b full fine-tuning offloads, for one), are kept.
    kept = {
        key: line
        for line in body[start:end]
        for key in ("gpu_memory_gib", "accelerate_config")
        if line.lstrip().startswith(key + ":")
    }
    replace_section(body, "launch", launch_section(choice.method, choice.processes, choice.nodes, kept))

    text = "\n".join(new_header(header, choice, was) + body) + "\n"
    notes = []
    if batch != old_batch:
        notes.append(
            f"train.gradient_accumulation_steps is {accumulation}: {batch} sequences per optimizer step, "
            f"as near as {choice.processes} {gpus} get to the template's {old_batch}."
        )
    floor = memory_floor_gb(choice)
    offloaded = "offload" in kept.get("accelerate_config", "")  # the shards live in CPU RAM
    if floor > GPU_MEMORY_GB and not offloaded:
        notes.append(
            f"{memory_words(choice.method)} come to about {floor:,.0f} GB per GPU before activations, more "
            f"than an {GPU_MEMORY_GB} GB H100 holds: add GPUs (--gpus) or nodes (--nodes)."
        )
    return InitResult(choice.out, template_path, text, notes)


def new_header(header: list[str], choice: InitChoice, was: Layout) -> list[str]:
    """The template's header with Launch rewritten, and Hardware / Memory too when the layout changed."""
    title, fields, notes = parse_header(header)
    command = f"ossft init --model {choice.model} --method {choice.method} --gpus {choice.gpus} --nodes {choice.nodes}"
    made = [f"# Written by `{command}` from recipes/{choice.template.name}."]
    launch = launch_notes(str(choice.out), choice.processes, choice.nodes)
    if (choice.processes, choice.nodes) == (was.processes, was.nodes):
        return title + made + fields["Hardware"] + launch + fields["Memory"] + notes
    sized_for = " ".join(line.removeprefix("# Hardware:").strip("# ") for line in fields["Hardware"])
    hardware = wrapped(f"Hardware: {layout_words(choice.gpus, choice.nodes)}. The template was sized for {sized_for}")
    memory = wrapped(
        f"Memory:   not measured for this layout (recipes/{choice.template.name} gives the figures for its own). "
        f"{memory_words(choice.method)}: at least ~{memory_floor_gb(choice):,.0f} GB per GPU, before activations; "
        f"`ossft plan {choice.out}` estimates the rest."
    )
    return title + made + hardware + launch + memory + notes


def layout_words(gpus: int, nodes: int) -> str:
    per_node = f"{gpus} GPU" if gpus == 1 else f"{gpus} GPUs"
    return f"{per_node} on one node" if nodes == 1 else f"{nodes} nodes of {per_node} ({gpus * nodes} in all)"


def wrapped(text: str) -> list[str]:
    """A header field as comment lines of at most 110 characters, continuation lines indented."""
    import textwrap

    lines = textwrap.wrap(text, width=108, subsequent_indent=" " * (len(CONTINUATION) - 2))
    return ["# " + line for line in lines]


def parse_header(header: list[str]) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """Split a recipe's opening comment into title lines, named fields (with their continuation lines), notes."""
    title, fields, notes = [], {}, []
    current = None
    for line in header:
        match = FIELD.match(line)
        if match:
            current = match["name"]
            fields[current] = [line]
        elif current and line.startswith(CONTINUATION):
            fields[current].append(line)
        else:
            current = None
            (notes if fields else title).append(line)
    missing = {"Hardware", "Launch", "Memory"} - set(fields)
    if missing:
        raise RuntimeError(f"a shipped recipe's header lacks {', '.join(sorted(missing))}: a bug in ossft")
    return title, fields, notes


def launch_notes(recipe: str, processes: int, nodes: int) -> list[str]:
    """The header's Launch lines: the commands that run `recipe` on this layout."""
    train = f"ossft train {shlex.quote(recipe)}"
    if nodes > 1:
        steps = [
            f"on each node: {train}",
            f"--nnodes {nodes} --node-rank <0..{nodes - 1}> --master-addr <node 0's address>",
            "(no flags under SkyPilot or Slurm: scripts/skypilot/multi-node.yaml, scripts/slurm/multi-node.sbatch)",
        ]
    else:
        steps = [train]
        if processes > 1:
            steps.append(f"({processes} processes, as launch: says: ossft re-runs itself under accelerate launch)")
    return [f"# Launch:   {steps[0]}"] + [CONTINUATION + step for step in steps[1:]]


def launch_section(method: str, processes: int, nodes: int, kept: dict[str, str] | None = None) -> list[str]:
    """The recipe's `launch:` section for this layout, as every shipped recipe writes it; `kept`, the
    template's own gpu_memory_gib and accelerate_config lines, by key."""
    kept = kept or {}
    gpu = [kept["gpu_memory_gib"]] if "gpu_memory_gib" in kept else []
    if processes == 1:
        return ["launch:", *gpu, with_comment("  num_processes: 1", "one process on one GPU")]
    config, why = ACCELERATE_CONFIGS[method]
    return [
        "launch:",
        *gpu,
        kept.get("accelerate_config") or with_comment(f"  accelerate_config: {config}", why),
        with_comment(
            f"  num_processes: {processes}", "processes in all (GPUs per node x nodes), as accelerate counts them"
        ),
        f"  num_machines: {nodes}",
    ]


def memory_floor_gb(choice: InitChoice) -> float:
    parameters = model_shape(MODEL_IDS[choice.model]).total_params
    return parameters * BYTES_PER_PARAMETER[choice.method] / choice.processes / 1e9


def memory_words(method: str) -> str:
    return "The bf16 weights alone" if method == "lora" else "fp32 weights, gradients and AdamW moments"


def with_comment(code: str, comment: str | None) -> str:
    if not comment:
        return code
    return f"{code:<{COMMENT_COLUMN}}# {comment}" if len(code) < COMMENT_COLUMN else f"{code}   # {comment}"


def section_span(lines: list[str], section: str) -> tuple[int, int]:
    """Line range of a top-level section, its trailing blank lines left out."""
    start = next((i for i, line in enumerate(lines) if re.match(rf"{section}:(\s|$)", line)), None)
    if start is None:
        raise RuntimeError(f"a shipped recipe has no {section}: section: a bug in ossft")
    end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i][0].isspace()), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return start, end


def set_value(lines: list[str], section: str, key: str, value: str, comment: str | None = None) -> None:
    """Set `section.key` on its own line, in place; the line's comment is kept unless one is given."""
    start, end = section_span(lines, section)
    for i in range(start + 1, end):
        match = KEY_LINE.match(lines[i])
        if match and match["key"] == key:
            lines[i] = with_comment(f"  {key}: {value}", comment if comment is not None else match["comment"])
            return
    raise RuntimeError(f"a shipped recipe has no {section}.{key} line: a bug in ossft")


def replace_section(lines: list[str], section: str, new: list[str]) -> None:
    start, end = section_span(lines, section)
    lines[start:end] = new


def check_rendered(text: str, choice: InitChoice) -> None:
    """Load the text as `ossft train` would, and check the values init promised."""
    from ossft.recipe.load import load_recipe

    with tempfile.TemporaryDirectory(prefix="ossft-init-") as folder:
        path = Path(folder) / (choice.out.name or "recipe.yaml")
        path.write_text(text, encoding="utf-8")
        try:
            recipe = load_recipe(path)
        except UserError as exc:
            raise RuntimeError(f"ossft init made a recipe that does not load (a bug in ossft): {exc}") from exc
    promised = {
        "model.base_model": (recipe.model.base_model, MODEL_IDS[choice.model]),
        "lora": (recipe.lora is not None, choice.method == "lora"),
        "launch.num_processes": (recipe.launch.num_processes, choice.processes),
        "launch.num_machines": (recipe.launch.num_machines, choice.nodes),
    }
    wrong = {key: pair for key, pair in promised.items() if pair[0] != pair[1]}
    if wrong:
        raise RuntimeError(f"ossft init made a recipe with wrong values (a bug in ossft): {wrong}")
