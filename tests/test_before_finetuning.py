"""The "before fine-tuning" score: BatchNorm statistics re-estimated on the reward's fixed train batches (a pruned
network scored with the dense statistics sits near chance), and the model's own statistics put back so
fine-tuning starts from the same state for every method."""

from __future__ import annotations

import torch

from purl.baselines import global_magnitude_prune
from purl.config import AUTO_BN_BATCHES, load_config
from purl.evaluator import calibration_batches
from purl.pipeline import measure, measure_before_finetuning
from purl.task import build_task
from purl.training import recalibrate_batchnorm


def _resnet_task(tmp_path, *overrides: str):
    config = load_config(None, [f"cache_dir={tmp_path}", "device=cpu", "model.name=resnet-20", "pretrain.epochs=1",
                                *overrides])
    return build_task(config, torch.device("cpu"), progress=False)


def test_before_score_reestimates_batchnorm_and_restores_the_model(tmp_path) -> None:
    task = _resnet_task(tmp_path)
    model, masks = task.fresh_copy()
    global_magnitude_prune(model, 0.9, masks=masks)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    before = measure_before_finetuning(task, model)
    for name, b in model.named_buffers():  # the model's statistics are back, bit for bit
        assert torch.equal(b, buffers[name]), name
    reference = task.fresh_copy()[0]
    reference.load_state_dict(model.state_dict())
    recalibrate_batchnorm(reference, calibration_batches(task.data, task.device, AUTO_BN_BATCHES,
                                                         task.config.data.batch_size))
    assert before == measure(task, reference, prefix="before_")
    assert before != measure(task, model, prefix="before_")  # the dense statistics give another score


def test_before_score_uses_the_rewards_batch_count(tmp_path) -> None:
    task = _resnet_task(tmp_path, "env.bn_recalibration_batches=1")
    model, masks = task.fresh_copy()
    global_magnitude_prune(model, 0.9, masks=masks)
    reference = task.fresh_copy()[0]
    reference.load_state_dict(model.state_dict())
    recalibrate_batchnorm(reference, calibration_batches(task.data, task.device, 1, task.config.data.batch_size))
    assert measure_before_finetuning(task, model) == measure(task, reference, prefix="before_")


def test_a_model_without_batchnorm_is_scored_as_it_is(quick_task) -> None:
    model, masks = quick_task.fresh_copy()
    global_magnitude_prune(model, 0.9, masks=masks)
    assert measure_before_finetuning(quick_task, model) == measure(quick_task, model, prefix="before_")
