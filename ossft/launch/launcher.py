"""One process, or `accelerate launch` over many: where the processes run and the command that starts them.

`ossft train` calls `plan_launch` first. When the run needs one process, it trains in-process; for
more, it re-executes itself under `python -m accelerate.commands.launch ... -m ossft train RECIPE`,
and each child, seeing torchrun's WORLD_SIZE / RANK / LOCAL_RANK, trains in-process. Each value of the
topology comes from the first of: a command-line flag, SkyPilot's environment, Slurm's environment,
the recipe's `launch:` section, the local GPU count. That order lets one recipe run unchanged on a
laptop, a GPU box, a SkyPilot cluster and a Slurm allocation.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ossft.errors import UserError
from ossft.files import ACCELERATE_CONFIGS_DIR

DEFAULT_MASTER_PORT = 29500  # torchrun's own default
DATA_PARALLEL_CONFIG = "ddp"  # accelerate_configs/ddp.yaml: plain DDP, the only kind CPUs can run


@dataclass(frozen=True)
class LaunchFlags:
    """What the user typed on `ossft train`; None where a flag was not given."""

    nproc: int | None = None  # processes per node
    nnodes: int | None = None
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None


@dataclass(frozen=True)
class Topology:
    processes_per_node: int
    nodes: int
    node_rank: int
    master_addr: str | None
    master_port: int
    origin: dict[str, str] = field(default_factory=dict, compare=False)  # value name -> where it came from

    @property
    def processes(self) -> int:
        return self.processes_per_node * self.nodes


@dataclass(frozen=True)
class LaunchPlan:
    topology: Topology
    command: list[str] | None  # None: train in this process
    accelerate_config: Path | None = None
    notes: tuple[str, ...] = ()  # what the user should know: a config swapped for DDP on CPU, ...
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


def inside_launcher(env: dict[str, str]) -> bool:
    """True in a process that torchrun or accelerate started: it must train, not launch again."""
    return all(name in env for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))


def resolve_topology(flags: LaunchFlags, launch_section, env: dict[str, str], local_gpus: int) -> Topology:
    sources = [("flag", _flag_values(flags)), ("SkyPilot", skypilot_values(env)), ("Slurm", slurm_values(env))]
    sources += [("environment", _generic_values(env)), ("recipe", _recipe_values(launch_section))]
    sources.append(("local GPU count", {"processes_per_node": local_gpus} if local_gpus else {}))
    chosen: dict[str, object] = {}
    origin: dict[str, str] = {}
    for source, values in sources:
        for name, value in values.items():
            if value is not None and name not in chosen:
                chosen[name], origin[_LABELS[name]] = value, source
    nodes = int(chosen.get("nodes", 1))
    per_node = chosen.get("processes_per_node")
    if per_node is None:
        per_node = 1
    elif origin[_LABELS["processes_per_node"]] == "recipe":
        per_node = _recipe_per_node(launch_section)
    topology = Topology(
        processes_per_node=int(per_node),
        nodes=nodes,
        node_rank=int(chosen.get("node_rank", 0)),
        master_addr=chosen.get("master_addr"),
        master_port=int(chosen.get("master_port", DEFAULT_MASTER_PORT)),
        origin=origin,
    )
    check_topology(topology)
    return topology


_LABELS = {
    "processes_per_node": "processes per node",
    "nodes": "nodes",
    "node_rank": "node rank",
    "master_addr": "master address",
    "master_port": "master port",
}


def _flag_values(flags: LaunchFlags) -> dict:
    return {
        "processes_per_node": flags.nproc,
        "nodes": flags.nnodes,
        "node_rank": flags.node_rank,
        "master_addr": flags.master_addr,
        "master_port": flags.master_port,
    }


def skypilot_values(env: dict[str, str]) -> dict:
    ips = [line.strip() for line in env.get("SKYPILOT_NODE_IPS", "").splitlines() if line.strip()]
    return {
        "processes_per_node": _int_env(env, "SKYPILOT_NUM_GPUS_PER_NODE"),
        "nodes": _int_env(env, "SKYPILOT_NUM_NODES"),
        "node_rank": _int_env(env, "SKYPILOT_NODE_RANK"),
        "master_addr": ips[0] if ips else None,  # SkyPilot lists the head node first
    }


def slurm_values(env: dict[str, str]) -> dict:
    if "SLURM_JOB_ID" not in env:
        return {}
    return {
        "processes_per_node": _slurm_gpus(env),
        "nodes": _int_env(env, "SLURM_NNODES") or _int_env(env, "SLURM_JOB_NUM_NODES"),
        # Under `srun` with one task per node SLURM_NODEID is this node's index in the allocation.
        "node_rank": _int_env(env, "SLURM_NODEID"),
        "master_addr": env.get("MASTER_ADDR") or first_slurm_host(env.get("SLURM_JOB_NODELIST", "")),
    }


def _generic_values(env: dict[str, str]) -> dict:
    return {"master_addr": env.get("MASTER_ADDR") or None, "master_port": _int_env(env, "MASTER_PORT")}


def _recipe_values(launch_section) -> dict:
    if launch_section is None:
        return {}
    return {"processes_per_node": launch_section.num_processes, "nodes": launch_section.num_machines}


def _recipe_per_node(launch_section) -> int:
    # The recipe counts processes in all, as accelerate does; what it fixes is the processes per node
    # (GPUs per machine), so `--nnodes 4` on a recipe of 2 nodes x 8 runs 4 nodes x 8.
    total, planned = launch_section.num_processes, launch_section.num_machines
    if total % planned:
        raise UserError(
            f"launch.num_processes ({total}) is not a multiple of launch.num_machines ({planned}): "
            "num_processes counts processes on all machines together, e.g. 16 for 2 nodes of 8 GPUs."
        )
    return total // planned


def _slurm_gpus(env: dict[str, str]) -> int | None:
    if value := _int_env(env, "SLURM_GPUS_ON_NODE"):
        return value
    # --gpus-per-node=8 or --gpus-per-node=h100:8
    text = env.get("SLURM_GPUS_PER_NODE", "")
    match = re.fullmatch(r"(?:[\w-]+:)?(\d+)", text.strip())
    return int(match.group(1)) if match else None


def first_slurm_host(nodelist: str) -> str | None:
    """The first host of a Slurm node list: 'gpu[03-05,09],cpu1' -> 'gpu03'. Slurm puts the batch
    host first, which is where `srun` rank 0 runs; `scontrol show hostnames` gives the same answer
    but is not on every compute node's PATH."""
    text = nodelist.strip()
    if not text:
        return None
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", text)
    prefix, ranges = match.group(1), match.group(2)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def _int_env(env: dict[str, str], name: str) -> int | None:
    text = env.get(name)
    if text is None or not text.strip():
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise UserError(f"environment variable {name}={text!r}: expected a whole number.") from None


def check_topology(t: Topology) -> None:
    where = ", ".join(f"{k} from {v}" for k, v in t.origin.items())
    if t.processes_per_node < 1 or t.nodes < 1:
        raise UserError(f"launch: {t.processes_per_node} processes on {t.nodes} nodes cannot train ({where}).")
    if not 0 <= t.node_rank < t.nodes:
        raise UserError(
            f"launch: node rank {t.node_rank} is outside 0..{t.nodes - 1} ({where}). "
            "Give each node a distinct --node-rank from 0 to --nnodes minus 1."
        )
    if t.nodes > 1 and not t.master_addr:
        raise UserError(
            f"launch: {t.nodes} nodes need the address of node 0 ({where}). Pass --master-addr HOST "
            "(the same on every node), or run under SkyPilot or Slurm, which provide it."
        )
    if not 0 < t.master_port < 65536:
        raise UserError(f"launch: master port {t.master_port} is not a TCP port (1-65535).")


# ---------------------------------------------------------------------------------------------
# The accelerate config and the command


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
    `ossft` (e.g. ["train", "recipe.yaml", "--set", "..."])."""
    env = dict(os.environ if env is None else env)
    if local_gpus is None:
        local_gpus = _local_gpu_count()
    if inside_launcher(env):
        world = int(env["WORLD_SIZE"])
        topology = Topology(world, 1, 0, env.get("MASTER_ADDR"), int(env.get("MASTER_PORT") or DEFAULT_MASTER_PORT))
        return LaunchPlan(topology, None)
    topology = resolve_topology(flags, recipe.launch, env, local_gpus)
    if topology.processes == 1:
        return LaunchPlan(topology, None)
    config, notes = _choose_config(recipe.launch.accelerate_config, local_gpus)
    extra_env = {}
    if not local_gpus and config_kind(config) != "DEEPSPEED":
        # Without a GPU, TrainingArguments only builds a gloo DDP group when told the run is on CPU;
        # otherwise every process trains alone on the whole dataset (transformers warns
        # "process group is initialized, but parallel_mode != ParallelMode.DISTRIBUTED").
        # Never for DeepSpeed: it would switch DeepSpeed off after the model was built sharded.
        extra_env = {"ACCELERATE_USE_CPU": "true"}
    command = accelerate_command(topology, config, child_args)
    return LaunchPlan(topology, command, config, tuple(notes), extra_env)


def _choose_config(name: str | None, local_gpus: int) -> tuple[Path, list[str]]:
    config = find_accelerate_config(name or DATA_PARALLEL_CONFIG)
    kind = config_kind(config)
    if local_gpus:
        return config, []
    # Accelerate never does FSDP on CPU: it silently falls back to DDP or to no distribution at all
    # (docs/traps.md#trap-6). DeepSpeed ZeRO-3 does run on CPU over gloo, when it is installed.
    if kind == "FSDP" or (kind == "DEEPSPEED" and not _deepspeed_installed()):
        why = "FSDP needs GPUs" if kind == "FSDP" else "deepspeed is not installed (pip install -e '.[deepspeed]')"
        ddp = find_accelerate_config(DATA_PARALLEL_CONFIG)
        return ddp, [f"no GPU here and {why}: {config.stem} runs as plain data parallel ({ddp.name}) instead"]
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


# ---------------------------------------------------------------------------------------------
# Running it

FAILURES_ENV = "OSSFT_RANK_FAILURES"  # a folder where each rank leaves its exit code, or that it finished
FINISHED = "finished"


@dataclass(frozen=True)
class LaunchOutcome:
    code: int  # what the launching `ossft train` exits with
    crashed_after_finishing: bool = False  # every rank finished, then one died at interpreter exit


def run_launch(plan: LaunchPlan) -> LaunchOutcome:
    """Run the launcher and decide the exit code. torchrun turns every child failure into exit code 1,
    so the ranks report theirs through files: 2 when any rank stopped on a user error (bad data, no
    disk, ...), 75 when preempted, else the launcher's own code. A rank that finished (its model saved,
    verified and reported) but then died at interpreter exit does not fail the run: with gloo a rank can
    abort in the process group's threads while Python shuts down (pytorch/pytorch#190489), after its
    work is done."""
    import signal
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ossft-ranks-") as folder:
        env = {**os.environ, **plan.env, FAILURES_ENV: folder}
        launcher = subprocess.Popen(plan.command, env=env)
        # A scheduler often signals only the process it started: pass SIGTERM / SIGINT on to the
        # launcher (torchrun hands it to every rank), then keep waiting for the ranks' checkpoint.
        forward = {
            sig: signal.signal(sig, lambda signum, _: launcher.send_signal(signum))
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            code = launcher.wait()
        finally:
            for sig, handler in forward.items():
                signal.signal(sig, handler)
        reports = [p.read_text() for p in Path(folder).glob("rank-*")]
    if code == 0:
        return LaunchOutcome(0)
    finished = sum(report == FINISHED for report in reports)
    reported = sorted(int(report or 1) for report in reports if report != FINISHED)
    if not reported and finished == plan.topology.processes_per_node:  # every rank of this node
        return LaunchOutcome(0, crashed_after_finishing=True)
    # A user error on any rank explains the rest (they stopped because it did); else what a rank said
    # (75: preempted), else the launcher's own code.
    return LaunchOutcome(2 if 2 in reported else (reported[0] if reported else code))


def report_rank_failure(exit_code: int, env: dict[str, str] | None = None) -> None:
    """Called by a rank that stops on an error, so the launching `ossft train` can exit the same way."""
    _report(str(exit_code), env)


def report_rank_finished(env: dict[str, str] | None = None) -> None:
    """Called by a rank once its share of the run is done and its outputs are written."""
    _report(FINISHED, env)


def _report(text: str, env: dict[str, str] | None) -> None:
    env = os.environ if env is None else env
    folder = env.get(FAILURES_ENV)
    if folder and Path(folder).is_dir():
        (Path(folder) / f"rank-{env.get('RANK', '0')}").write_text(text)


def rank_label(env: dict[str, str] | None = None) -> str:
    """'rank 1 of 2: ' inside a multi-process run, else ''. Every rank prints its own errors."""
    env = os.environ if env is None else env
    if not inside_launcher(env) or env.get("WORLD_SIZE") == "1":
        return ""
    return f"rank {env['RANK']} of {env['WORLD_SIZE']}: "


def _local_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
