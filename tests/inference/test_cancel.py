"""Cancel within seconds: inside a training step (forward and backward) and between generated tokens."""

import threading
import time

import pytest
import torch

from restpg.inference.cancel import Cancelled, cancel_hooks, decoder_layers
from restpg.inference.models import GenerationSettings, ModelConfig, generate
from restpg.training.train import TrainConfig, TrainingExample, train_model


def test_hooks_stop_the_forward_and_the_backward_pass(tiny_model):
    model = tiny_model.model
    assert len(decoder_layers(model)) == 2
    event = threading.Event()
    ids = torch.tensor([[1, 2, 3, 4]])
    with cancel_hooks(model, event):
        with torch.enable_grad():
            loss = model(input_ids=ids, labels=ids).loss
            event.set()  # cancelled between the forward and the backward pass
            with pytest.raises(Cancelled):
                loss.backward()
        with pytest.raises(Cancelled):
            model(input_ids=ids)
    model(input_ids=ids)  # hooks removed on leaving


def test_generation_stops_at_the_next_token(tiny_model):
    event = threading.Event()
    timer = threading.Timer(0.5, event.set)
    timer.start()
    start = time.perf_counter()
    with pytest.raises(Cancelled):
        generate(
            tiny_model, ["a long story"], GenerationSettings(max_new_tokens=100_000, temperature=0.0), cancel=event
        )
    assert time.perf_counter() - start < 5


def test_training_stops_mid_step_and_keeps_its_checkpoints(tiny_model_dir, tmp_path):
    config = TrainConfig(
        select_by="last",
        learning_rate=1e-3,
        warmup_steps=0,
        max_steps=400,
        batch_size=1,
        per_device_batch_size=1,
        optimizer="adamw_torch",
        lora_r=2,
        lora_alpha=4,
        save_steps=2,
    )
    examples = [TrainingExample("prompt " * 50, "completion " * 50)] * 4
    event = threading.Event()
    steps = []

    def on_step(step, total, logs):
        steps.append(step)
        if step == 3:
            threading.Timer(0.05, event.set).start()  # lands inside step 4's forward or backward pass

    start = time.perf_counter()
    with pytest.raises(Cancelled):
        train_model(
            ModelConfig(model=str(tiny_model_dir), dtype="float32"),
            examples,
            config,
            tmp_path / "run",
            on_step=on_step,
            cancel=event,
        )
    assert max(steps) < 10 and time.perf_counter() - start < 60
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").is_dir()  # finished work is kept
    assert not (tmp_path / "run" / "adapter").exists()
