"""The loss of a training step: TRL's fused LM head, never the [tokens, vocabulary] logits.

TRL's SFTTrainer patches the model's forward (`add_fused_lm_head`) so the loss, the entropy and the
token accuracy are folded tile by tile. `ossft plan` counts on that (the logits of 4096 tokens alone
would be 7.7 GiB for gpt-oss), so these tests check that ossft's trainer (PEFT, routed expert LoRA,
harmony labels) goes through it and gets the model's own loss, its gradients and TRL's metrics."""

from __future__ import annotations

import pytest
import torch

from ossft.recipe.load import load_recipe
from tests.conftest import REPO


@pytest.fixture(scope="module")
def trainer_and_batch(tiny_model_dir, tmp_path_factory):
    from ossft.train.run import prepare_trainer

    out = tmp_path_factory.mktemp("loss") / "out"
    recipe = load_recipe(
        REPO / "recipes" / "quickstart.yaml", [f"model.base_model={tiny_model_dir}", f"output.dir={out}"]
    )
    trainer, *_ = prepare_trainer(recipe, on_status=lambda _: None)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    return trainer, batch


def count_lm_head_calls(model, run) -> int:
    calls = []
    hook = model.get_output_embeddings().register_forward_hook(lambda *_: calls.append(1))
    try:
        run()
    finally:
        hook.remove()
    return len(calls)


def lora_gradients(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return grads


def test_training_loss_is_the_models_own_without_full_logits(trainer_and_batch):
    trainer, batch = trainer_and_batch
    model = trainer.model
    model.train()
    trainer._metrics["train"].clear()
    losses = {}

    def fused():
        losses["fused"] = trainer.compute_loss(model, dict(batch))
        losses["fused"].backward()

    def own():  # transformers' forward: full logits, cross-entropy, plus the router aux loss TRL enables
        losses["own"] = model(**batch).loss
        losses["own"].backward()

    assert count_lm_head_calls(model, fused) == 0
    fused_grads = lora_gradients(model)
    assert count_lm_head_calls(model, own) == 1  # the hook sees the LM head when it runs
    own_grads = lora_gradients(model)

    assert abs(losses["fused"].item() - losses["own"].item()) < 1e-5
    assert len(fused_grads) == 2 * (4 + 2) * 2  # 2 layers x (q/k/v/o + 2 expert stacks) x (A, B)
    for name, grad in fused_grads.items():
        assert torch.allclose(grad, own_grads[name], rtol=1e-4, atol=1e-7), name


def test_logged_entropy_and_accuracy_match_the_full_logits(trainer_and_batch):
    trainer, batch = trainer_and_batch
    model = trainer.model
    model.train()
    trainer._metrics["train"].clear()
    with torch.no_grad():
        trainer.compute_loss(model, dict(batch))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    trained = labels != -100
    log_p = logits.double().log_softmax(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)[trained].mean().item()
    accuracy = (logits.argmax(-1) == labels)[trained].double().mean().item()
    metrics = trainer._metrics["train"]
    assert metrics["entropy"][-1] == pytest.approx(entropy, rel=1e-5)
    assert metrics["mean_token_accuracy"][-1] == pytest.approx(accuracy, abs=1e-7)


def test_evaluation_loss_skips_the_full_logits_too(trainer_and_batch):
    trainer, batch = trainer_and_batch
    model = trainer.model
    model.eval()
    result = {}

    def evaluate():
        result["loss"], *_ = trainer.prediction_step(model, dict(batch), prediction_loss_only=True)

    try:
        assert count_lm_head_calls(model, evaluate) == 0
        with torch.no_grad():
            own = model(**batch).loss
        assert result["loss"].item() == pytest.approx(own.item(), abs=1e-5)
    finally:
        model.train()
