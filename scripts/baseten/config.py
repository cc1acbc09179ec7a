"""Baseten training job: gpt-oss-20b LoRA (attention + experts) on one H100.

    pip install --upgrade truss          # the `truss train` CLI and the truss_train SDK
    truss train push scripts/baseten/config.py --tail

Run it from the repository root. The workspace below uploads the whole repository (not only this
folder); the job runs `bash scripts/setup.sh` in it, then `ossft train` on the recipe. Set the
Hugging Face token once as a Baseten secret named `hf_access_token` (Settings -> Secrets); it reaches
the job as HF_TOKEN and is never written here. Checkpointing gives the job BT_CHECKPOINT_DIR, and the
run's output folder is put there (`--set output.dir=...`), so the adapter and its checkpoints outlive
the job. Another recipe: change the path in the start command (and the accelerator count to its
launch: section).
"""

from truss.base import truss_config
from truss_train import definitions

# The image only supplies Python and the CUDA user space: setup.sh installs torch and ossft into .venv.
BASE_IMAGE = "pytorch/pytorch:2.7.0-cuda12.8-cudnn9-runtime"

training_runtime = definitions.Runtime(
    # One shell: HF cache in Baseten's persistent cache, set up .venv, train into the checkpoint folder.
    start_commands=[
        "/bin/bash -c 'set -euo pipefail; "
        'export HF_HOME="${BT_RW_CACHE_DIR:-$HOME/.cache}/huggingface"; '
        "bash scripts/setup.sh; "
        '.venv/bin/ossft train recipes/gpt-oss-20b-lora-1gpu.yaml --set output.dir="$BT_CHECKPOINT_DIR"\''
    ],
    environment_variables={
        "HF_TOKEN": definitions.SecretReference(name="hf_access_token"),
    },
    checkpointing_config=definitions.CheckpointingConfig(enabled=True),  # defines BT_CHECKPOINT_DIR
    cache_config=definitions.CacheConfig(enabled=True),  # defines BT_RW_CACHE_DIR: the model downloads once
)

training_compute = definitions.Compute(
    node_count=1,
    accelerator=truss_config.AcceleratorSpec(accelerator=truss_config.Accelerator.H100, count=1),
)

training_job = definitions.TrainingJob(
    image=definitions.Image(base_image=BASE_IMAGE),
    compute=training_compute,
    runtime=training_runtime,
    # Upload the repository root (two levels up), without local environments and results.
    workspace=definitions.Workspace(workspace_root="../..", exclude_dirs=[".git", ".venv", "outputs", "models"]),
)

training_project = definitions.TrainingProject(name="ossft-gpt-oss-20b-lora", job=training_job)
