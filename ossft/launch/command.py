"""One process, or `accelerate launch` over many: the accelerate config and the command that starts them.

`ossft train` calls `plan_launch` first. When the run needs one process, it trains in-process; for
more, it re-executes itself under `python -m accelerate.commands.launch ... -m ossft train RECIPE`
(`child_arguments`), and each child, seeing torchrun's WORLD_SIZE / RANK / LOCAL_RANK, trains
in-process. Where the processes run is decided in topology.py; running them in ranks.py.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ossft.errors import UserError
from ossft.files import ACCELERATE_CONFIGS_DIR
from ossft.launch.topology import (
    LaunchFlags,
    Topology,
    inside_launcher,
    launched_topology,
    local_gpu_count,
    resolve_topology,
)

DATA_PARALLEL_CONFIG = "ddp"  # accelerate_configs/ddp.yaml: plain DDP, for recipes that name no config


@dataclass(frozen=True)
class LaunchPlan:
    topology: Topology
    command: list[str] | None  # None: train in this process
    accelerate_config: Path | None = None
    notes: tuple[str, ...] = ()  # what the user should know: FSDP2 over gloo on CPU, ...
    env: dict[str, str] = field(default_factory=dict)  # added to the launcher's environment

    def describe(self) -> list[str]:
        t = self.topology
        lines = [
            f"{name}: {value}  ({t.origin.get(name, 'default')})"
            for name, value in (
                ("processes per node", t.processes_per_node),
                ("nodes", t.nodes),
                ("node rank", t.node_rank),
                ("master address", t.master_addr or "-"),
                ("master port", t.master_port),
            )
        ]
        lines.append(f"accelerate config: {self.accelerate_config or '- (one process, no accelerate launch)'}")
        return lines


def child_arguments(
    recipe: Path, overrides: list[str], *, smoke: bool = False, skip_disk_check: bool = False, debug: bool = False
) -> list[str]:
    """What each launched process runs after `ossft`: the same `train`, without the launch flags (the
    launcher places each process through WORLD_SIZE / RANK) and without --dry-run."""
    child = ["--debug"] * debug + ["train", str(recipe)]
    child += [arg for value in overrides for arg in ("--set", value)]
    return child + ["--smoke"] * smoke + ["--skip-disk-check"] * skip_disk_check


def find_accelerate_config(name: str) -> Path:
    """A path to a YAML file, or the name of one in accelerate_configs/ (with or without .yaml)."""
    given = Path(name).expanduser()
    for candidate in (given, ACCELERATE_CONFIGS_DIR / name, ACCELERATE_CONFIGS_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate.resolve()
    shipped = sorted(p.stem for p in ACCELERATE_CONFIGS_DIR.glob("*.yaml"))
    raise UserError(
        f"launch.accelerate_config: {name!r} is neither a file nor one of the shipped configs "
        f"({', '.join(shipped) or 'none found in ' + str(ACCELERATE_CONFIGS_DIR)}). Name one of them or give a path."
    )


def config_kind(path: Path) -> str:
    """accelerate's distributed_type of a config file (FSDP, DEEPSPEED, MULTI_GPU, ...)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc}).") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: an accelerate config must be a mapping (accelerate config writes one).")
    return str(data.get("distributed_type", "NO")).upper()


def plan_launch(
    recipe,
    flags: LaunchFlags,
    child_args: list[str],
    env: dict[str, str] | None = None,
    local_gpus: int | None = None,
) -> LaunchPlan:
    """Decide between training here and relaunching; `child_args` are what each process runs after
    `ossft` (e.g. ["train", "recipe.yaml", "--set", "..."], see `child_arguments`)."""
    env = dict(os.environ if env is None else env)
    if local_gpus is None:
        local_gpus = local_gpu_count()
    if inside_launcher(env):
        return LaunchPlan(launched_topology(env), None)
    topology = resolve_topology(flags, recipe.launch, env, local_gpus)
    if topology.processes == 1:
        return LaunchPlan(topology, None)
    config, notes = _choose_config(recipe.launch.accelerate_config, local_gpus)
    extra_env = {}
    if not local_gpus and config_kind(config) != "DEEPSPEED":
        # Without a GPU, TrainingArguments only builds a gloo group when told the run is on CPU;
        # otherwise every process trains alone on the whole dataset (transformers warns
        # "process group is initialized, but parallel_mode != ParallelMode.DISTRIBUTED"). FSDP then
        # needs launch/cpu_fsdp.py's patch, which each process installs.
        # Never for DeepSpeed: it would switch DeepSpeed off after the model was built sharded.
        extra_env = {"ACCELERATE_USE_CPU": "true"}
    command = accelerate_command(topology, config, child_args)
    return LaunchPlan(topology, command, config, tuple(notes), extra_env)


def _choose_config(name: str | None, local_gpus: int) -> tuple[Path, list[str]]:
    config = find_accelerate_config(name or DATA_PARALLEL_CONFIG)
    kind = config_kind(config)
    if local_gpus:
        return config, []
    if kind == "FSDP":
        # accelerate alone would run an FSDP config as DDP here (docs/traps.md#trap-6); each process
        # patches that (launch/cpu_fsdp.py) and runs the real FSDP2 path over gloo.
        return config, [f"no GPU here: {config.stem} runs as real FSDP2 over gloo on the CPU (launch/cpu_fsdp.py)"]
    # DeepSpeed ZeRO-3 runs on CPU over gloo, when it is installed.
    if kind == "DEEPSPEED" and not _deepspeed_installed():
        ddp = find_accelerate_config(DATA_PARALLEL_CONFIG)
        return ddp, [
            f"no GPU here and deepspeed is not installed (pip install -e '.[deepspeed]'): {config.stem} runs "
            f"as plain data parallel ({ddp.name}) instead"
        ]
    return config, []


def _deepspeed_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


def accelerate_command(topology: Topology, config: Path, child_args: list[str]) -> list[str]:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    command += ["--num_processes", str(topology.processes), "--num_machines", str(topology.nodes)]
    if topology.nodes > 1:
        command += ["--machine_rank", str(topology.node_rank)]
    command += ["--main_process_ip", topology.master_addr or "127.0.0.1"]
    command += ["--main_process_port", str(topology.master_port)]
    return command + ["-m", "ossft", *child_args]


def printable(plan: LaunchPlan) -> str:
    """The command as a shell line, credentials (a --set train.hub_token=...) redacted."""
    from ossft.secrets import redact

    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in plan.env.items())
    return redact((env + " " if env else "") + shlex.join(plan.command or []))
