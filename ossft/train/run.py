"""One training run: SFTTrainer on the model and the data, resume, the verified final save, the run's outputs."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

from ossft.checkpoints.layout import RECIPE_COPY
from ossft.checkpoints.verify import trainable_digest, verify_trained_model
from ossft.data import prepare
from ossft.errors import UserError
from ossft.files import write_text_atomic
from ossft.launch.cpu_fsdp import enable_fsdp_without_accelerator
from ossft.launch.ranks import leave_process_group, refuse_lone_rank
from ossft.model import load as model
from ossft.recipe.sections import Recipe
from ossft.train import disk, plots, resume
from ossft.train.card import write_model_card
from ossft.train.config import sft_config
from ossft.train.provenance import recipe_copy
from ossft.train.summary import summarize, write_summary
from ossft.units import GIB


@dataclass
class TrainingRun:
    recipe: Recipe
    trainer: object
    data: prepare.PreparedData
    trainable_params: int
    total_params: int
    wall_seconds: float
    measurements: object | None = None  # callbacks.Measurements: tokens, speed, peak memory
    replica_digests: list[str] | None = None  # trained weights of each data-parallel rank, see replica_digests()
    distributed: str | None = None  # how the processes shared the model, see distribution()
    attention: dict | None = None  # the attention trained with, and its check on the GPU, see attention_choice()

    @property
    def output_dir(self) -> Path:
        return Path(self.recipe.output.dir)


def prepare_trainer(recipe, on_status=print, data_progress=None):
    """Everything up to the first step: tokenizer, data, model, LoRA, trainer. `data_progress()`: a
    context manager yielding an `on_progress(done, total)` for the tokenization (shown by rank 0)."""
    from transformers import set_seed

    from ossft.train.guards import CheckpointMarker, RunGuard
    from ossft.train.meter import LossPlotCallback, MeteredSFTTrainer

    enable_fsdp_without_accelerator()  # before TrainingArguments and the Trainer build accelerate's state
    early = sft_config(recipe)  # refuse a bad train: section before any slow work
    tokenizer = model.load_tokenizer(recipe)
    # The first process of each machine fills the tokenized-data cache; the others then read it
    # instead of tokenizing the same rows at the same time.
    with early.main_process_first(local=True, desc="tokenize the data"):
        shown = data_progress is not None and early.process_index == 0
        with data_progress() if shown else contextlib.nullcontext() as tick:
            prepared = prepare.prepare_data(recipe, tokenizer, on_progress=tick)
    stats = prepared.stats
    origin = f" (from the cache {prepared.cache_path})" if prepared.from_cache else ""
    on_status(
        f"data: {stats.rows} rows -> {stats.examples} examples, {stats.tokens:,} tokens, "
        f"{stats.trained_tokens:,} trained{origin}"
    )
    args = sft_config(recipe, has_eval=prepared.eval is not None)
    # The Trainer seeds only when it is built, after the model: without this, LoRA's random init of
    # lora_A differs from run to run and no two runs of one recipe train the same weights.
    set_seed(args.seed)
    network = model.keep_frozen_experts_in_mxfp4(model.apply_lora(model.load_model(recipe), recipe), recipe)
    attention = attention_choice(network, recipe, args.device, on_status)
    trainable, total = model.parameter_counts(network)
    on_status(f"model: {total:,} parameters, {trainable:,} trainable ({100 * trainable / total:.2f}%)")
    trainer = MeteredSFTTrainer(
        model=network,
        args=args,
        train_dataset=prepared.train,
        eval_dataset=prepared.eval,
        processing_class=tokenizer,
        callbacks=[LossPlotCallback(), CheckpointMarker(resume.run_identity(recipe, prepared.train))],
        guard=RunGuard(recipe.guards.max_nonfinite_losses),
    )
    return trainer, prepared, trainable, total, attention


def attention_choice(network, recipe, device, on_status) -> dict:
    """ossft_flex is compiled for the GPU it runs on; a few seconds there check it against eager
    attention before any step trusts it, and a disagreement falls back to eager (sink_attention.py)."""
    from ossft.launch.memory import is_packed
    from ossft.model.sink_attention import choose_attention

    if device.type == "cpu":
        chosen = {"attention": network.config._attn_implementation}
    else:
        chosen = choose_attention(network, device)
        on_status(chosen.get("note", f"attention: {chosen['attention']}"))
    return {**chosen, "packed": is_packed(recipe.train)}


def replica_digests(trainer) -> list[str] | None:
    """Each rank's digest of its trained weights, when every rank holds whole weights (DDP): they
    must be equal, and a difference means the replicas drifted apart (a rank that skipped a step, a
    non-deterministic all-reduce). None for one process and for sharded runs (FSDP, ZeRO-3), where
    each rank holds a different shard. A collective: every rank calls it."""
    from accelerate.utils import DistributedType, gather_object

    accelerator = trainer.accelerator
    if accelerator.num_processes == 1 or accelerator.distributed_type in (
        DistributedType.FSDP,
        DistributedType.DEEPSPEED,
    ):
        return None
    return gather_object([trainable_digest(trainer.model)])


def distribution(trainer) -> str:
    """How the trained model was spread over the processes, read off the prepared model itself (so a
    recipe that asked for FSDP2 and got DDP cannot pass for FSDP2): 'FSDP2 over 2 processes (gloo):
    37 of 37 parameters sharded', 'DDP over 2 processes (gloo)', 'DEEPSPEED over 2 processes
    (gloo)', 'one process'."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    accelerator = trainer.accelerator
    if accelerator.num_processes == 1:
        return "one process"
    kind = accelerator.distributed_type.value
    backend = dist.get_backend() if dist.is_initialized() else "?"
    where = f"over {accelerator.num_processes} processes ({backend})"
    if kind.startswith("MULTI_"):  # MULTI_CPU, MULTI_GPU, ...: accelerate's names for DDP
        return f"DDP {where}"
    if kind != "FSDP":
        return f"{kind} {where}"
    params = list(trainer.model.parameters())
    sharded = sum(isinstance(p, DTensor) for p in params)
    version = accelerator.state.fsdp_plugin.fsdp_version
    return f"FSDP{version} {where}: {sharded} of {len(params)} parameters sharded"


def sharded_fsdp(trainer) -> bool:
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    return trainer.is_fsdp_enabled and plugin is not None and "SHARDED" in str(plugin.state_dict_type)


def save_sharded_final(trainer, output: Path) -> None:
    """The final save of an FSDP SHARDED_STATE_DICT run, which `Trainer.save_model` skips (it writes
    nothing in that mode): each rank writes its shard, as for a checkpoint, into
    OUTPUT/pytorch_model_fsdp_0/, which `ossft merge-shards` reads; rank 0 adds the config and
    tokenizer. Gathering the whole model on one rank instead would need ~234 GB for 120b (docs/traps.md#trap-8)."""
    from accelerate.utils import save_fsdp_model
    from peft import PeftModel

    is_adapter = isinstance(trainer.model, PeftModel)
    accelerator = trainer.accelerator
    save_fsdp_model(accelerator.state.fsdp_plugin, accelerator, trainer.model, str(output), adapter_only=is_adapter)
    accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        if is_adapter:
            trainer.model.peft_config["default"].save_pretrained(str(output))
            trainer.model.get_base_model().config.save_pretrained(str(output))
        else:
            trainer.model.config.save_pretrained(str(output))
        trainer.processing_class.save_pretrained(str(output))


def resume_point(trainer, recipe, on_status) -> Path | None:
    """Rank 0 looks first (and moves partial checkpoints aside); the others then see the same folder."""
    identity = resume.run_identity(recipe, trainer.train_dataset)
    with trainer.args.main_process_first(local=False, desc="choose the checkpoint to resume"):
        say = on_status if trainer.is_world_process_zero() else (lambda line: None)
        return resume.choose_checkpoint(recipe.output.resume, Path(recipe.output.dir), identity, say)


def planned_steps(trainer) -> int:
    args = trainer.args
    if args.max_steps > 0:
        return args.max_steps
    per_step = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    return math.ceil(len(trainer.train_dataset) / per_step) * math.ceil(args.num_train_epochs)


def warn_if_too_big(recipe, trainer, on_status) -> None:
    """`ossft plan`'s estimate against the GPU actually here; a warning, not a refusal: the estimate
    is within ~15% of published figures, not exact."""
    import torch

    from ossft.launch import plan

    if not torch.cuda.is_available():
        return
    try:
        layout = plan.layout_for(recipe, trainer.accelerator.num_processes, 1)
        warning = plan.memory_warning(recipe, layout, torch.cuda.get_device_properties(0).total_memory)
    except UserError:
        return  # a model whose shape the planner cannot read: nothing to compare
    if warning:
        on_status(f"[yellow]{warning}[/]")


def run_training(recipe, on_status=print, check_disk: bool = True, data_progress=None) -> TrainingRun:
    trainer, prepared, trainable, total, attention = prepare_trainer(recipe, on_status, data_progress)
    refuse_lone_rank(trainer.accelerator)  # before anything is written to the output folder
    output = Path(recipe.output.dir)
    warn_if_too_big(recipe, trainer, on_status)
    if check_disk:
        plan = disk.disk_needs(trainer, planned_steps(trainer))
        disk.check_disk(plan, output)  # every rank: on nodes without a shared disk each has its own
        on_status(f"disk: this run writes up to {plan.total / GIB:,.2f} GiB ({plan.checkpoints_kept} checkpoints)")
    main = trainer.is_world_process_zero()  # shared outputs are written once, by rank 0
    if main:
        write_text_atomic(output / RECIPE_COPY, recipe_copy(recipe))
    checkpoint = resume_point(trainer, recipe, on_status)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    wall = time.perf_counter() - started
    trainer.guard.outcome(trainer.args, trainer.state)  # preempted, or stopped on non-finite losses
    distributed = distribution(trainer)
    on_status(f"trained with {distributed}")
    if sharded_fsdp(trainer):
        save_sharded_final(trainer, output)
        on_status(f"saved as FSDP shards in {output}; `ossft merge-shards {output}` makes a loadable model")
    else:
        trainer.save_model(str(output))
        if main:
            verified = verify_trained_model(trainer.model, output, trainer.saved_state_dict)
            on_status(f"saved and read back: {verified.tensors} tensors of the {verified.architecture} in {output}")
    trainer.saved_state_dict = None
    trainer.save_state()
    replicas = replica_digests(trainer)
    measured = trainer.meter.measure(trainer)
    run = TrainingRun(recipe, trainer, prepared, trainable, total, wall, measured, replicas, distributed, attention)
    if main:
        write_run_outputs(run)  # summary.json, loss.png, then README.md over TRL's and PEFT's cards
    leave_process_group(trainer)
    return run


def write_run_outputs(run) -> dict:
    """summary.json, loss.png and README.md, in that order: the card quotes the summary and shows the plot.
    Called after the model is saved and verified; the card is written last, replacing the ones TRL and
    PEFT write on their own."""
    summary = summarize(run)
    write_summary(summary, run.output_dir)
    plots.write_loss_plot(run.trainer.state.log_history, run.output_dir)
    write_model_card(run, summary)
    return summary
