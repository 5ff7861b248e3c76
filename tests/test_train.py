import dataclasses
import json

import pytest
import torch

from helpers import DEVICES, Crash, crash_at_step, fast_train_config
from restpg.models import GenerationSettings, ModelConfig, generate, load_adapter, load_model
from restpg.prompts import PromptTooLongError
from restpg.train import (
    TrainConfig,
    TrainingExample,
    WeightedCollator,
    tokenize_examples,
    train_model,
    weighted_completion_loss,
)

FAST = fast_train_config()


def test_loss_masks_the_prompt_and_scales_with_weight():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, 2, -100, -100]])
    ones = weighted_completion_loss(logits, labels, torch.tensor([1.0, 1.0]))
    assert weighted_completion_loss(logits, labels, torch.tensor([0.0, 0.0])) == 0
    assert weighted_completion_loss(logits, labels, torch.tensor([2.0, 2.0])) == pytest.approx(2 * ones.item())
    changed = logits.clone()
    changed[0, 0] += 5.0  # position 0 of row 0 has no target (-100: a prompt token): masked
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
    with pytest.raises(PromptTooLongError, match="training example e7: its prompt has .* tokens, the limit is 10"):
        tokenize_examples(
            tiny_model.tokenizer, [TrainingExample("long " * 50, "x", 1.0, "e7")], TrainConfig(max_input_tokens=10)
        )  # never cut: the header and request would go
    batch = WeightedCollator(0)(
        rows + tokenize_examples(tiny_model.tokenizer, [TrainingExample("a", "b")], TrainConfig())
    )
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["weight"].tolist() == [0.5, 1.0]


@pytest.mark.parametrize("device", DEVICES)
def test_train_saves_a_loadable_adapter_that_learned(tiny_model_dir, tmp_path, device):
    examples = [TrainingExample("say the word", "banana banana banana")] * 4
    config = dataclasses.replace(FAST, learning_rate=5e-2, max_steps=20, save_steps=10)
    model = ModelConfig(model=str(tiny_model_dir), device=device, dtype="float32")
    result = train_model(model, examples, config, tmp_path / "run")
    assert result.steps == 20 and result.examples == 4 and result.train_tokens > 0
    assert (result.adapter_dir / "adapter_config.json").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert losses[-1] < losses[0]
    loaded = load_model(model)
    load_adapter(loaded, result.adapter_dir)
    text = generate(loaded, ["say the word"], GenerationSettings(max_new_tokens=3, temperature=0.0))[0][0].text
    assert "banana" in text
    with pytest.raises(FileExistsError, match="exists already"):
        train_model(model, examples, config, tmp_path / "run")


def test_zero_weight_examples_do_not_train(tiny_model_dir, tmp_path):
    examples = [TrainingExample("say the word", "banana banana banana", weight=0.0)] * 4
    result = train_model(ModelConfig(model=str(tiny_model_dir), dtype="float32"), examples, FAST, tmp_path / "run")
    assert all(h["loss"] == 0 for h in result.log_history if "loss" in h)


def test_interrupted_training_resumes_from_its_checkpoint(tiny_model_dir, tmp_path):
    examples = [TrainingExample("p", "c c c")] * 4
    with pytest.raises(Crash):
        train_model(
            ModelConfig(model=str(tiny_model_dir), dtype="float32"),
            examples,
            FAST,
            tmp_path / "run",
            on_step=crash_at_step(3),
        )
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").exists()
    assert not (tmp_path / "run" / "adapter").exists()
    seen = []
    result = train_model(
        ModelConfig(model=str(tiny_model_dir), dtype="float32"),
        examples,
        FAST,
        tmp_path / "run",
        on_step=lambda step, total, logs: seen.append(step),
    )
    assert result.steps == 6 and min(s for s in seen if s) == 3  # steps 1-2 were not redone


def test_bad_examples_are_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="no training examples"):
        train_model(ModelConfig(model=str(tiny_model_dir), dtype="float32"), [], FAST, tmp_path)
    with pytest.raises(ValueError, match="non-negative"):
        train_model(
            ModelConfig(model=str(tiny_model_dir), dtype="float32"), [TrainingExample("a", "b", -1.0)], FAST, tmp_path
        )


def _one_sgd_step(tiny_model_dir, tmp_path, micro: int, name: str, device: str = "cpu"):
    """The LoRA weights and logged loss after one optimizer step of batch 4 in micro-batches of ``micro``."""
    from safetensors.torch import load_file

    examples = [TrainingExample(f"prompt {i} " * (2 + i), "the answer " * (1 + 2 * i), 1.0 + i / 4) for i in range(4)]
    config = TrainConfig(
        select_by="last",
        learning_rate=0.5,
        optimizer="sgd",
        warmup_steps=0,
        max_steps=1,
        batch_size=4,
        per_device_batch_size=micro,
        weight_decay=0.0,
        max_grad_norm=1e9,
        lora_r=2,
        lora_alpha=4,
        lora_dropout=0.0,
        save_steps=1,
    )
    model = ModelConfig(model=str(tiny_model_dir), device=device, dtype="float32")
    result = train_model(model, examples, config, tmp_path / name)
    loss = next(h["loss"] for h in result.log_history if "loss" in h)
    return load_file(str(result.adapter_dir / "adapter_model.safetensors")), loss


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_accumulation_gives_the_same_step(tiny_model_dir, tmp_path, device):
    """Batch 4 as 1 x 4, 2 x 2 or 4 x 1: the same gradient (so the same SGD step) and the same logged loss."""
    whole, whole_loss = _one_sgd_step(tiny_model_dir, tmp_path, 4, "a", device)
    for micro in (2, 1):
        weights, loss = _one_sgd_step(tiny_model_dir, tmp_path, micro, f"m{micro}", device)
        assert loss == pytest.approx(whole_loss, rel=1e-4)
        for name, value in whole.items():
            assert torch.allclose(weights[name], value, atol=1e-5), (micro, name)
    moved = [name for name, value in whole.items() if "lora_B" in name and value.abs().max() > 0]
    assert moved  # the step did change the adapter (B starts at zero)


def test_loss_on_the_completion_positions_equals_the_full_loss(tiny_model):
    """Logits only where a completion token is predicted give the same loss as logits everywhere."""
    from restpg.train import predicted_positions

    rows = tokenize_examples(
        tiny_model.tokenizer,
        [TrainingExample("a longer prompt here", "yes"), TrainingExample("hi", "a longer completion")],
        TrainConfig(),
    )
    batch = WeightedCollator(0)(rows)
    with torch.no_grad():
        full = tiny_model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        positions = predicted_positions(batch["labels"])
        kept = tiny_model.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=positions
        ).logits
    assert kept.shape[1] == len(positions) < full.shape[1]
    expected = weighted_completion_loss(full[:, :-1], batch["labels"][:, 1:], batch["weight"])
    assert weighted_completion_loss(kept, batch["labels"][:, positions + 1], batch["weight"]) == pytest.approx(
        expected.item(), rel=1e-5
    )


def test_a_completion_cut_at_the_limit_gets_no_end_of_sequence(tiny_model):
    eos = tiny_model.tokenizer.eos_token_id
    short, cut = tokenize_examples(
        tiny_model.tokenizer,
        [TrainingExample("p", "one two"), TrainingExample("p", "one two three four five six")],
        TrainConfig(max_output_tokens=4),
    )
    assert short["labels"][-1] == eos
    assert cut["labels"][-1] != eos and sum(1 for t in cut["labels"] if t != -100) == 4


def _validation_loss(model_dir, adapter, examples):
    loaded = load_model(ModelConfig(model=str(model_dir), device="cpu", dtype="float32"))
    load_adapter(loaded, adapter)
    batch = WeightedCollator(loaded.tokenizer.pad_token_id)(
        tokenize_examples(loaded.tokenizer, examples, TrainConfig())
    )
    weight = batch.pop("weight")
    labels = batch.pop("labels")
    with torch.no_grad():
        logits = loaded.model(**batch).logits
    return weighted_completion_loss(logits[:, :-1], labels[:, 1:], weight).item()


def test_the_checkpoint_with_the_best_validation_loss_is_kept(tiny_model_dir, tmp_path):
    """#12.2: validated every save_steps; the adapter saved is the best one, not the last step."""
    examples = [TrainingExample("say the word", "banana banana banana")] * 4
    validation = [TrainingExample("say the word", "cherry plum"), TrainingExample("a fruit", "cherry")]
    config = dataclasses.replace(FAST, learning_rate=5e-2, max_steps=6, save_steps=2, select_by="loss")
    result = train_model(
        ModelConfig(model=str(tiny_model_dir), dtype="float32"),
        examples,
        config,
        tmp_path / "run",
        validation=validation,
    )
    selection = json.loads((tmp_path / "run" / "checkpoint_selection.json").read_text())
    losses = {entry["step"]: entry["eval_loss"] for entry in selection["validated"]}
    assert sorted(losses) == [2, 4, 6] and selection["select_by"] == "loss" and selection["steps"] == 6
    best = min(losses, key=losses.get)
    assert best != 6, "training on bananas should take the model away from cherries"
    assert result.selected_step == selection["selected_step"] == best
    assert _validation_loss(tiny_model_dir, result.adapter_dir, validation) == pytest.approx(losses[best], rel=1e-4)
    with pytest.raises(ValueError, match="needs validation examples"):
        train_model(ModelConfig(model=str(tiny_model_dir), dtype="float32"), examples, config, tmp_path / "other")


def test_the_checkpoint_with_the_best_reward_is_kept(tiny_model_dir, tmp_path):
    """select_by "reward": the validate function's value (higher is better) picks the checkpoint."""
    examples = [TrainingExample("say the word", "banana banana banana")] * 4
    rewards, fingerprints = iter([0.2, 0.9, 0.1]), []

    def validate(model):
        assert not model.training  # generation happens in eval mode
        fingerprints.append(sum(p.detach().abs().sum().item() for n, p in model.named_parameters() if "lora_B" in n))
        return next(rewards)

    config = dataclasses.replace(FAST, learning_rate=5e-2, max_steps=6, save_steps=2, select_by="reward")
    result = train_model(
        ModelConfig(model=str(tiny_model_dir), dtype="float32"), examples, config, tmp_path / "run", validate=validate
    )
    assert result.selected_step == 4 and result.selected_metric == pytest.approx(0.9)
    from safetensors.torch import load_file

    saved = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert sum(v.abs().sum().item() for n, v in saved.items() if "lora_B" in n) == pytest.approx(
        fingerprints[1], rel=1e-5
    )


@pytest.mark.parametrize("device", DEVICES)
def test_full_fine_tuning_saves_the_whole_model_that_learned(tiny_model_dir, tmp_path, device):
    """#12.11: finetuning "full" trains every weight (the paper's way) and saves a plain model folder."""
    assert TrainConfig(finetuning="full").rate == 5e-6 and TrainConfig().rate == 2e-4  # paper's / ours
    with pytest.raises(ValueError, match="finetuning must be one of lora, full"):
        TrainConfig(finetuning="qlora")
    examples = [TrainingExample("say the word", "banana banana banana")] * 4
    config = dataclasses.replace(FAST, finetuning="full", learning_rate=5e-3, max_steps=20, save_steps=10)
    model = ModelConfig(model=str(tiny_model_dir), device=device, dtype="float32")
    result = train_model(model, examples, config, tmp_path / "run")
    saved = sorted(p.name for p in result.adapter_dir.iterdir())
    assert "config.json" in saved and "model.safetensors" in saved and "adapter_config.json" not in saved
    loaded = load_model(ModelConfig(model=str(result.adapter_dir), device=device, dtype="float32"))
    text = generate(loaded, ["say the word"], GenerationSettings(max_new_tokens=3, temperature=0.0))[0][0].text
    assert "banana" in text


def test_the_learning_rate_decays_linearly_to_a_tenth_of_its_peak(tiny_model_dir, tmp_path):
    """Paper: linear warm-up, then linear decay to 0.1 of the peak (min_lr_ratio 0: to 0)."""
    examples = [TrainingExample("p", "c c")] * 2
    rates = {}
    for ratio in (0.1, 0.0):
        config = dataclasses.replace(
            FAST, learning_rate=1e-3, warmup_steps=2, max_steps=12, save_steps=12, min_lr_ratio=ratio
        )
        result = train_model(
            ModelConfig(model=str(tiny_model_dir), dtype="float32"), examples, config, tmp_path / f"r{ratio}"
        )
        rates[ratio] = [h["learning_rate"] for h in result.log_history if "learning_rate" in h]
    paper = rates[0.1]
    peak = paper.index(max(paper))
    assert max(paper) == pytest.approx(1e-3) and peak <= 2
    decay = paper[peak:]
    assert all(a >= b for a, b in zip(decay, decay[1:])) and 1e-4 <= decay[-1] < 2.5e-4
    steps = [b - a for a, b in zip(decay, decay[1:])]
    assert max(steps) == pytest.approx(min(steps), rel=1e-3)  # linear
    assert rates[0.0][-1] == pytest.approx(1e-4) and rates[0.0][-1] < decay[-1]  # plain linear: one step from 0
