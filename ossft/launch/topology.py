"""Where the processes run: processes per node, nodes, this node's rank and node 0's address.

Each value comes from the first of: a command-line flag, SkyPilot's environment, Slurm's environment,
MASTER_ADDR / MASTER_PORT, the recipe's `launch:` section, the local GPU count. That order lets one
recipe run unchanged on a laptop, a GPU box, a SkyPilot cluster and a Slurm allocation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ossft.errors import UserError

DEFAULT_MASTER_PORT = 29500  # torchrun's own default


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


def inside_launcher(env: dict[str, str]) -> bool:
    """True in a process that torchrun or accelerate started: it must train, not launch again."""
    return all(name in env for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))


def launched_topology(env: dict[str, str]) -> Topology:
    """The run as a process that torchrun started sees it: WORLD_SIZE processes, already placed."""
    port = int(env.get("MASTER_PORT") or DEFAULT_MASTER_PORT)
    return Topology(int(env["WORLD_SIZE"]), 1, 0, env.get("MASTER_ADDR"), port)


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


def local_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
