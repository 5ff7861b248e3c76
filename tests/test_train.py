import dataclasses

import pytest
import torch

from restpg.models import ModelConfig, generate, GenerationSettings, load_adapter, load_model
from restpg.train import (TrainConfig, TrainingExample, WeightedCollator, tokenize_examples, train_lora,
                          weighted_completion_loss)

FAST = TrainConfig(learning_rate=5e-3, warmup_steps=0, max_steps=6, batch_size=2, per_device_batch_size=2,
                   optimizer="adamw_torch", lora_r=4, lora_alpha=8, lora_dropout=0.0, save_steps=2, device="cpu")


def test_loss_masks_the_prompt_and_scales_with_weight():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, 2, -100, -100]])
    ones = weighted_completion_loss(logits, labels, torch.tensor([1.0, 1.0]))
    assert weighted_completion_loss(logits, labels, torch.tensor([0.0, 0.0])) == 0
    assert weighted_completion_loss(logits, labels, torch.tensor([2.0, 2.0])) == pytest.approx(2 * ones.item())
    changed = logits.clone()
    changed[0, 0] += 5.0  # position 0 predicts token 1 of row 0: a prompt token, masked
    assert weighted_completion_loss(changed, labels, torch.tensor([1.0, 1.0])) == pytest.approx(ones.item())
    # each example counts as the mean over its own completion tokens, whatever its length
    only_first = weighted_completion_loss(logits, labels, torch.tensor([1.0, 0.0]))
    only_second = weighted_completion_loss(logits, labels, torch.tensor([0.0, 1.0]))
    assert only_first + only_second == pytest.approx(ones.item())


def test_tokenize_and_collate(tiny_model):
    rows = tokenize_examples(tiny_model.tokenizer, [TrainingExample("hi", "a completion", 0.5)], TrainConfig())
    row = rows[0]
    prompt_len = row["labels"].count(-100)
    assert row["input_ids"][prompt_len:] == row["labels"][prompt_len:]
    assert row["labels"][-1] == tiny_model.tokenizer.eos_token_id and row["weight"] == 0.5
    clipped = tokenize_examples(tiny_model.tokenizer, [TrainingExample("long " * 50, "x")],
                                TrainConfig(max_input_tokens=10, max_output_tokens=3))[0]
    assert clipped["labels"].count(-100) == 10 and len(clipped["input_ids"]) <= 13
    batch = WeightedCollator(0)(rows + tokenize_examples(tiny_model.tokenizer, [TrainingExample("a", "b")], TrainConfig()))
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["weight"].tolist() == [0.5, 1.0]


def test_train_saves_a_loadable_adapter_that_learned(tiny_model_dir, tmp_path):
    examples = [TrainingExample("say the word", "banana banana banana")] * 4
    config = dataclasses.replace(FAST, learning_rate=5e-2, max_steps=20, save_steps=10)
    result = train_lora(ModelConfig(model=str(tiny_model_dir)), examples, config, tmp_path / "run")
    assert result.steps == 20 and result.examples == 4 and result.train_tokens > 0
    assert (result.adapter_dir / "adapter_config.json").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert losses[-1] < losses[0]
    loaded = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    load_adapter(loaded, result.adapter_dir)
    text = generate(loaded, ["say the word"], GenerationSettings(max_new_tokens=3, temperature=0.0))[0][0].text
    assert "banana" in text
    with pytest.raises(FileExistsError, match="exists already"):
        train_lora(ModelConfig(model=str(tiny_model_dir)), examples, config, tmp_path / "run")


def test_zero_weight_examples_do_not_train(tiny_model_dir, tmp_path):
    examples = [TrainingExample("say the word", "banana banana banana", weight=0.0)] * 4
    result = train_lora(ModelConfig(model=str(tiny_model_dir)), examples, FAST, tmp_path / "run")
    assert all(h["loss"] == 0 for h in result.log_history if "loss" in h)


def test_interrupted_training_resumes_from_its_checkpoint(tiny_model_dir, tmp_path):
    examples = [TrainingExample("p", "c c c")] * 4

    class Crash(Exception):
        pass

    def crash_at_step_3(step, total, logs):
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        train_lora(ModelConfig(model=str(tiny_model_dir)), examples, FAST, tmp_path / "run", on_step=crash_at_step_3)
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").exists()
    assert not (tmp_path / "run" / "adapter").exists()
    seen = []
    result = train_lora(ModelConfig(model=str(tiny_model_dir)), examples, FAST, tmp_path / "run",
                        on_step=lambda step, total, logs: seen.append(step))
    assert result.steps == 6 and min(s for s in seen if s) == 3  # steps 1-2 were not redone


def test_bad_examples_are_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="no training examples"):
        train_lora(ModelConfig(model=str(tiny_model_dir)), [], FAST, tmp_path)
    with pytest.raises(ValueError, match="non-negative"):
        train_lora(ModelConfig(model=str(tiny_model_dir)), [TrainingExample("a", "b", -1.0)], FAST, tmp_path)
