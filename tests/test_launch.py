"""Where the processes run: flags, SkyPilot, Slurm, the recipe, the local GPUs, in that order."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ossft.errors import UserError
from ossft.files import ACCELERATE_CONFIGS_DIR as CONFIG_DIR
from ossft.launch.command import LaunchPlan, child_arguments, plan_launch
from ossft.launch.ranks import PREEMPTED_EXIT, LaunchOutcome, rank_label, run_launch
from ossft.launch.topology import LaunchFlags, Topology, first_slurm_host, inside_launcher, resolve_topology
from tests.conftest import REPO

NO_FLAGS = LaunchFlags()


def recipe(*overrides: str):
    from ossft.recipe.load import load_recipe

    return load_recipe(REPO / "recipes" / "quickstart.yaml", list(overrides))


def launch_section(processes=None, machines=1):
    return recipe(f"launch.num_processes={processes or 'null'}", f"launch.num_machines={machines}").launch


SKYPILOT = {
    "SKYPILOT_NODE_IPS": "10.0.0.7\n10.0.0.8\n",
    "SKYPILOT_NODE_RANK": "1",
    "SKYPILOT_NUM_NODES": "2",
    "SKYPILOT_NUM_GPUS_PER_NODE": "8",
}
SLURM = {
    "SLURM_JOB_ID": "4242",
    "SLURM_NNODES": "4",
    "SLURM_NODEID": "3",
    "SLURM_JOB_NODELIST": "gpu[07-10]",
    "SLURM_GPUS_ON_NODE": "8",
}


def test_nothing_said_means_one_process_per_local_gpu_or_one_on_cpu():
    assert resolve_topology(NO_FLAGS, launch_section(), {}, local_gpus=0).processes == 1
    gpu_box = resolve_topology(NO_FLAGS, launch_section(), {}, local_gpus=8)
    assert (gpu_box.processes_per_node, gpu_box.nodes, gpu_box.origin["processes per node"]) == (
        8,
        1,
        "local GPU count",
    )


def test_recipe_counts_processes_in_all_and_flags_win():
    two_nodes = launch_section(16, 2)
    t = resolve_topology(NO_FLAGS, two_nodes, {"MASTER_ADDR": "10.1.1.1"}, local_gpus=8)
    assert (t.processes_per_node, t.nodes, t.processes, t.master_addr) == (8, 2, 16, "10.1.1.1")
    # --nnodes 4 on a recipe of 2 nodes x 8 GPUs: the recipe fixes the GPUs per node, the flag the nodes.
    t = resolve_topology(LaunchFlags(nnodes=4, node_rank=3, master_addr="h0"), two_nodes, {}, local_gpus=8)
    assert (t.processes_per_node, t.nodes, t.node_rank, t.processes) == (8, 4, 3, 32)
    assert t.origin == {
        "processes per node": "recipe",
        "nodes": "flag",
        "node rank": "flag",
        "master address": "flag",
    }
    t = resolve_topology(LaunchFlags(nproc=2), two_nodes, {"MASTER_ADDR": "h"}, local_gpus=8)
    assert (t.processes_per_node, t.nodes) == (2, 2)


def test_skypilot_environment():
    t = resolve_topology(NO_FLAGS, launch_section(8), SKYPILOT, local_gpus=8)
    assert (t.processes_per_node, t.nodes, t.node_rank, t.master_addr, t.master_port) == (8, 2, 1, "10.0.0.7", 29500)
    assert set(t.origin.values()) == {"SkyPilot"}
    t = resolve_topology(LaunchFlags(master_port=31000, node_rank=0), launch_section(8), SKYPILOT, local_gpus=8)
    assert (t.node_rank, t.master_port, t.master_addr) == (0, 31000, "10.0.0.7")


def test_slurm_environment():
    t = resolve_topology(NO_FLAGS, launch_section(), SLURM, local_gpus=8)
    assert (t.processes_per_node, t.nodes, t.node_rank, t.master_addr) == (8, 4, 3, "gpu07")
    # MASTER_ADDR, as the sbatch script sets it from scontrol, wins over the node list.
    t = resolve_topology(NO_FLAGS, launch_section(), {**SLURM, "MASTER_ADDR": "10.9.9.9"}, local_gpus=8)
    assert t.master_addr == "10.9.9.9"
    # --gpus-per-node=h100:4 without SLURM_GPUS_ON_NODE
    env = {k: v for k, v in SLURM.items() if k != "SLURM_GPUS_ON_NODE"} | {"SLURM_GPUS_PER_NODE": "h100:4"}
    assert resolve_topology(NO_FLAGS, launch_section(), env, local_gpus=8).processes_per_node == 4
    # SkyPilot wins over Slurm when both are present
    t = resolve_topology(NO_FLAGS, launch_section(), {**SLURM, **SKYPILOT}, local_gpus=8)
    assert (t.nodes, t.node_rank, t.master_addr) == (2, 1, "10.0.0.7")


@pytest.mark.parametrize(
    ("nodelist", "first"),
    [("gpu[07-10]", "gpu07"), ("node1", "node1"), ("a[3,5-6],b[1-2]", "a3"), ("n-01,n-02", "n-01"), ("", None)],
)
def test_first_slurm_host(nodelist, first):
    assert first_slurm_host(nodelist) == first


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        (LaunchFlags(nnodes=2), {}, "need the address of node 0"),
        (LaunchFlags(nnodes=2, node_rank=2, master_addr="h"), {}, "node rank 2 is outside 0..1"),
        (NO_FLAGS, {**SLURM, "SLURM_NODEID": "x"}, "SLURM_NODEID='x': expected a whole number"),
        (LaunchFlags(master_port=70000), {}, "master port 70000 is not a TCP port"),
    ],
)
def test_impossible_topologies_are_refused(flags, env, message):
    with pytest.raises(UserError, match=message):
        resolve_topology(flags, launch_section(), env, local_gpus=0)


def test_recipe_total_must_divide_by_machines():
    with pytest.raises(UserError, match=r"num_processes \(9\) is not a multiple of launch.num_machines \(2\)"):
        resolve_topology(LaunchFlags(master_addr="h"), launch_section(9, 2), {}, local_gpus=0)


def test_inside_a_launcher_nothing_is_relaunched():
    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"}
    assert inside_launcher(env) and not inside_launcher({"WORLD_SIZE": "2", "RANK": "1"})
    plan = plan_launch(recipe("launch.num_processes=8"), LaunchFlags(nproc=4), ["train", "r.yaml"], env, 8)
    assert plan.command is None and plan.topology.processes == 2
    assert rank_label(env) == "rank 1 of 2: " and rank_label({}) == ""


def test_command_for_a_second_node():
    plan = plan_launch(
        recipe("launch.accelerate_config=fsdp2"),
        LaunchFlags(nproc=8, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29600),
        ["train", "r.yaml", "--set", "train.max_steps=5"],
        env={},
        local_gpus=8,
    )
    assert plan.command == [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(CONFIG_DIR / "fsdp2.yaml"),
        "--num_processes", "16", "--num_machines", "2", "--machine_rank", "1",
        "--main_process_ip", "10.0.0.1", "--main_process_port", "29600",
        "-m", "ossft", "train", "r.yaml", "--set", "train.max_steps=5",
    ]  # fmt: skip
    assert plan.env == {} and plan.notes == ()


def test_fsdp_stays_fsdp_on_cpu():
    plan = plan_launch(recipe("launch.accelerate_config=fsdp2"), LaunchFlags(nproc=2), ["train", "r.yaml"], {}, 0)
    assert plan.accelerate_config == CONFIG_DIR / "fsdp2.yaml"
    assert plan.env == {"ACCELERATE_USE_CPU": "true"}  # gloo; each process then patches in FSDP
    assert plan.notes == ("no GPU here: fsdp2 runs as real FSDP2 over gloo on the CPU (launch/cpu_fsdp.py)",)
    # One process needs no launcher at all.
    assert plan_launch(recipe(), NO_FLAGS, ["train", "r.yaml"], {}, 0).command is None


def test_zero3_runs_as_zero3_on_cpu_when_deepspeed_is_installed():
    pytest.importorskip("deepspeed")
    plan = plan_launch(recipe("launch.accelerate_config=zero3"), LaunchFlags(nproc=2), ["train", "r.yaml"], {}, 0)
    assert plan.accelerate_config == CONFIG_DIR / "zero3.yaml"
    assert plan.env == {} and plan.notes == ()  # ACCELERATE_USE_CPU would switch DeepSpeed off


def test_unknown_config_is_named_with_the_shipped_ones():
    with pytest.raises(UserError, match=r"'fsdp3' is neither a file nor one of the shipped configs \(.*fsdp2.*\)"):
        plan_launch(recipe("launch.accelerate_config=fsdp3"), LaunchFlags(nproc=2), ["train"], {}, 2)


# --- what the launching process makes of the ranks' reports ----------------------------------------

# Stands in for `accelerate launch`: "ranks" 0 and 1 report through the real report functions, then the
# launcher exits 1, as torchrun does whenever a rank died (here: rank 1 aborting at interpreter exit).
FAKE_LAUNCHER = """
import os, sys
from ossft.launch.ranks import report_rank_failure, report_rank_finished
for rank, report in enumerate(sys.argv[1:]):
    env = {**os.environ, "RANK": str(rank)}
    if report == "finished":
        report_rank_finished(env)
    elif report != "nothing":
        report_rank_failure(int(report), env)
sys.exit(1)
"""


@pytest.mark.parametrize(
    ("reports", "code", "crashed_after_finishing"),
    [
        (["finished", "finished"], 0, True),  # all work done; a rank died on the way out
        (["finished", "nothing"], 1, False),  # rank 1 died before finishing
        (["finished", "2"], 2, False),  # a user error on rank 1
        (["75", "75"], 75, False),  # preempted
    ],
)
def test_launch_outcome_from_rank_reports(reports, code, crashed_after_finishing):
    topology = Topology(processes_per_node=2, nodes=1, node_rank=0, master_addr=None, master_port=29500)
    plan = LaunchPlan(topology, [sys.executable, "-c", FAKE_LAUNCHER, *reports])
    assert run_launch(plan) == LaunchOutcome(code, crashed_after_finishing)


def test_what_the_launching_process_says_of_each_outcome():
    assert (LaunchOutcome(0).failed, LaunchOutcome(0).message) == (False, None)
    crashed = LaunchOutcome(0, crashed_after_finishing=True)
    assert not crashed.failed and "the run is complete" in crashed.message
    preempted = LaunchOutcome(PREEMPTED_EXIT)
    assert not preempted.failed and preempted.message.startswith("preempted: every rank wrote its checkpoint")
    stopped = LaunchOutcome(2)
    assert stopped.failed and stopped.message == "training stopped: the error of each failing rank is printed above."


def test_each_process_runs_the_same_train_without_the_launch_flags():
    assert child_arguments(Path("r.yaml"), ["a=1", "b=2"], smoke=True, skip_disk_check=True, debug=True) == [
        "--debug", "train", "r.yaml", "--set", "a=1", "--set", "b=2", "--smoke", "--skip-disk-check",
    ]  # fmt: skip
    assert child_arguments(Path("r.yaml"), []) == ["train", "r.yaml"]


@pytest.mark.e2e
def test_an_fsdp_launch_without_gpus_stops_each_lone_rank(tiny_model_dir, tmp_path):
    # What a user may type on a CPU machine: accelerate itself, with an FSDP config. accelerate then runs
    # each process alone (DistributedType.NO), so both would train the whole run into one folder.
    import os
    import subprocess

    out = tmp_path / "out"
    command = [
        str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file", str(CONFIG_DIR / "fsdp2.yaml"),
        "--num_processes", "2", "--main_process_port", "29517", "-m", "ossft", "train",
        str(REPO / "recipes" / "quickstart.yaml"), "--set", f"model.base_model={tiny_model_dir}",
        "--set", f"output.dir={out}", "--set", "train.max_steps=2",
        "--set", f"data.datasets.0.path={REPO / 'examples/data/chat_multilingual.jsonl'}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0  # each rank exits 2; accelerate's launcher reports it as its own failure
    assert done.stderr.count("launched as one of 2 (WORLD_SIZE=2), but accelerate runs it alone (NO)") == 2
    assert "Run `ossft train RECIPE` instead" in done.stderr
    assert not out.exists() or not any(out.iterdir())  # nothing was written
