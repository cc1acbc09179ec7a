"""Real FSDP2 SHARDED_STATE_DICT saves of a tiny gpt-oss, written by accelerate's own save functions (1.16).

Fixtures for merge-shards, made without training (tests/test_fsdp2.py trains through the whole Trainer path): two
gloo processes (`python -m tests.fsdp_checkpoint`) shard the model with `fully_shard` themselves, each decoder
layer then the root as accelerate's FSDP2 does, and
call accelerate's `save_fsdp_model` / `save_fsdp_optimizer` with a SHARDED_STATE_DICT plugin, the way
`Trainer._save_optimizer_and_scheduler` calls them (transformers/trainer.py:3554-3561). What lands on disk:
- `pytorch_model_fsdp_0/`: `dist_cp.save({"model": state_dict})` (accelerate/utils/fsdp_utils.py:172-185),
  `.metadata` plus `__{rank}_0.distcp` per rank. The Trainer passes `adapter_only=True`
  (transformers/distributed/fsdp.py:252-264), so a PEFT model's state dict is `get_peft_model_state_dict`
  (PEFT's file names, adapter only) and a full model's `get_model_state_dict` (fsdp_utils.py:57-74);
  `whole_peft_model` saves as `accelerator.save_state` does (accelerator.py:3701, no adapter_only): the whole
  PEFT model, `...lora_A.default.weight` beside the frozen `...base_layer.weight`;
- `optimizer_0/`: `dist_cp.save({"optimizer": ...})` (fsdp_utils.py:336-349);
- from `Trainer._save_checkpoint` (trainer.py:3355-3415): scheduler.pt, rng_state_{rank}.pth, trainer_state.json;
  nothing else, since `save_model` writes no weights, config or tokenizer for SHARDED_STATE_DICT
  (trainer.py:4097-4100). `ossft train` adds recipe.yaml to the run folder.
A save named "." is the run folder's own `pytorch_model_fsdp_0/`, what `save_fsdp_model(..., RUN)` writes.

Each save's weights are the base's plus seeded noise (every weight of a full model, the LoRA tensors of an
adapter, whose lora_B starts at zero), so a test cannot pass by reading the base; the unsharded result is
written beside the run in `<run>.expected/<save>/` (`model.safetensors`, or PEFT's own `save_pretrained`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
DONE = "fsdp-checkpoint rank done"  # printed by a rank after its last save and destroy_process_group


@dataclass
class RunSpec:
    run_dir: str
    base: str  # a model folder; one with config.json alone gives a model of that shape, weights uninitialised
    saves: dict[str, int]  # folder in run_dir ("." for the final save) -> seed of its weights
    lora: bool = False
    whole_peft_model: bool = False  # accelerator.save_state's form, not the Trainer's adapter-only one
    dtype: str = "float32"
    expected: bool = True  # perturb the weights and write them, unsharded, beside the run
    recipe_overrides: list[str] = field(default_factory=list)


def expected_dir(run_dir: Path, save: str) -> Path:
    return Path(f"{run_dir}.expected") / ("final" if save == "." else save)


def write_fsdp_runs(runs: list[RunSpec], timeout: float = 300) -> None:
    """Write every run with two gloo processes (started once: most of the cost is importing torch)."""
    for run in runs:
        _write_recipe(run)
    work = Path(runs[0].run_dir).parent
    job = work / ".fsdp-job.json"
    job.write_text(json.dumps([asdict(r) for r in runs]))
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": "2",
        "OMP_NUM_THREADS": "1",  # two ranks on two cores
    }
    logs = [work / f".fsdp-rank-{rank}.log" for rank in range(2)]
    ranks = []
    for rank, log in enumerate(logs):
        with open(log, "w") as output:  # a file, not a pipe: nothing blocks while the other rank is watched
            command = [sys.executable, "-m", "tests.fsdp_checkpoint", str(job)]
            environment = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            ranks.append(subprocess.Popen(command, cwd=REPO, env=environment, stdout=output, stderr=subprocess.STDOUT))
    try:
        _wait_for_all_or_a_failure(ranks, logs, timeout)
    finally:
        for rank in ranks:  # a rank that failed leaves the other waiting in a collective: end it
            if rank.poll() is None:
                rank.kill()
                rank.wait()
    for number, rank in enumerate(ranks):
        if _failed(rank, logs[number]):
            raise RuntimeError(f"FSDP rank {number} failed ({rank.returncode}):\n{logs[number].read_text()[-4000:]}")
    for path in (job, *logs):
        path.unlink()


def _failed(rank: subprocess.Popen, log: Path) -> bool:
    # A rank that printed DONE had saved everything and left the process group; gloo can still abort it
    # while Python shuts down ("terminate called without an active exception", pytorch/pytorch#190489,
    # seen in CI). Its files are complete, and every test reads them back.
    return bool(rank.returncode) and DONE not in log.read_text()


def _wait_for_all_or_a_failure(ranks: list[subprocess.Popen], logs: list[Path], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(rank.poll() is None for rank in ranks):
        failed = any(rank.returncode is not None and _failed(rank, log) for rank, log in zip(ranks, logs))
        if failed or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_recipe(run: RunSpec) -> None:
    """recipe.yaml in the run folder, as `ossft train` leaves it (resolved, every default filled in)."""
    from ossft.recipe.load import dump_recipe, load_recipe

    overrides = [f"model.base_model={run.base}", f"output.dir={run.run_dir}", *run.recipe_overrides]
    if not run.lora:
        overrides.append("lora=null")
    recipe = load_recipe(QUICKSTART, overrides)
    Path(run.run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run.run_dir) / "recipe.yaml").write_text(dump_recipe(recipe))


# --- in each rank --------------------------------------------------------------------------------------------


def _rank_main(job: Path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        for run in json.loads(job.read_text()):
            run = RunSpec(**run)
            for save, seed in run.saves.items():
                _save(run, save, seed)
    finally:
        dist.destroy_process_group()
    print(DONE, flush=True)


def _save(run: RunSpec, save: str, seed: int) -> None:
    import torch.distributed as dist
    from accelerate.utils import save_fsdp_model, save_fsdp_optimizer
    from torch.distributed.fsdp import fully_shard

    model = _model(run)
    if run.expected:
        model = _perturbed(model, run.lora, seed)
        if dist.get_rank() == 0:
            _write_expected(model, run.lora, expected_dir(Path(run.run_dir), save))
    for layer in _decoder_layers(model):  # accelerate's FSDP2 wraps each decoder layer, then the root
        fully_shard(layer)
    fully_shard(model)
    folder = Path(run.run_dir) / save
    plugin, state = _accelerate()
    # accelerate's own writers, called as Trainer._save_optimizer_and_scheduler calls them (trainer.py:3554-3561).
    save_fsdp_model(plugin, state, model, str(folder), adapter_only=not run.whole_peft_model)
    if save != ".":
        save_fsdp_optimizer(plugin, state, _stepped_optimizer(model), model, str(folder))
        _write_trainer_files(folder, seed)
    dist.barrier()


def _accelerate():
    """The FSDP2 SHARDED_STATE_DICT plugin, and the process state accelerate's save functions log through."""
    from accelerate import FullyShardedDataParallelPlugin, PartialState

    return FullyShardedDataParallelPlugin(fsdp_version=2, state_dict_type="SHARDED_STATE_DICT"), PartialState()


def _model(run: RunSpec):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ossft.model.load import apply_lora
    from ossft.recipe.load import load_recipe

    dtype = getattr(torch, run.dtype)
    torch.manual_seed(0)  # the same LoRA initialisation on both ranks
    if any(Path(run.base).glob("*.safetensors")):
        model = AutoModelForCausalLM.from_pretrained(run.base, dtype=dtype)
    else:  # a config alone: only the shapes matter, so skip the (slow) random initialisation
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(run.base), dtype=dtype)
        model = model.to_empty(device="cpu")
    if run.lora:
        model = apply_lora(model, load_recipe(Path(run.run_dir) / "recipe.yaml"))
    return model


def _perturbed(model, lora: bool, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.is_floating_point() and (not lora or "lora_" in name):
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.add_((0.05 * noise).to(param.dtype))
    return model


def _write_expected(model, lora: bool, folder: Path) -> None:
    from safetensors.torch import save_file

    if lora:
        model.save_pretrained(folder)  # PEFT's own adapter files: what merge-shards must reproduce
        return
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().clone().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))


def _decoder_layers(model):
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.model.layers


def _stepped_optimizer(model):
    """AdamW after one step of zero gradients without weight decay: its moments exist, the weights are unchanged."""
    import torch

    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-3, weight_decay=0.0)
    for param in trained:
        param.grad = torch.zeros_like(param)
    optimizer.step()
    return optimizer


def _write_trainer_files(folder: Path, step: int) -> None:
    """What the Trainer adds to a checkpoint: scheduler.pt, rng_state_{rank}.pth, trainer_state.json."""
    import torch
    import torch.distributed as dist

    rank = dist.get_rank()
    torch.save({"python": None, "cpu": torch.random.get_rng_state()}, folder / f"rng_state_{rank}.pth")
    if rank == 0:
        torch.save({"last_epoch": step, "_step_count": step + 1}, folder / "scheduler.pt")
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}, indent=2))


if __name__ == "__main__":
    _rank_main(Path(sys.argv[1]))
