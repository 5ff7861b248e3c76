import dataclasses
import json

import pytest
import torch

from helpers import DEVICES, Crash, crash_at_step, fast_train_config
from restpg.data.prompts import PromptTooLongError
from restpg.inference.models import GenerationSettings, ModelConfig, generate, load_adapter, load_model
from restpg.training.train import (
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
    from restpg.training.train import predicted_positions

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
    return weighted_completion_loss(logits[:, :-1], labels[:, 1:], weight, TrainConfig().loss).item()


def test_the_checkpoint_with_the_best_validation_loss_is_kept(tiny_model_dir, tmp_path):
    """Validated every save_steps; the adapter saved is the best one, not the last step."""
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
    """finetuning "full" trains every weight (the paper's way) and saves a plain model folder."""
    assert TrainConfig(finetuning="full").rate == 5e-6 and TrainConfig().rate == 2e-4  # paper's / ours
    with pytest.raises(ValueError, match="--finetuning: must be one of lora, full"):
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


def _uneven_examples():
    """Six examples of different prompt and completion lengths and weights."""
    return [
        TrainingExample(f"prompt {i} " * (1 + i), "the answer is " * (1 + 3 * (i % 3)), 0.5 + i / 5) for i in range(6)
    ]


def _one_step(tiny_model_dir, tmp_path, name, per_device, batch=6, loss="sum", examples=None):
    """The adapter's weights after one SGD step of ``batch`` examples in micro-batches of ``per_device``."""
    from safetensors.torch import load_file

    config = fast_train_config(
        learning_rate=0.5,
        optimizer="sgd",
        max_steps=1,
        batch_size=batch,
        per_device_batch_size=per_device,
        weight_decay=0.0,
        max_grad_norm=1e9,
        lora_r=2,
        lora_alpha=4,
        save_steps=1,
        loss=loss,
    )
    model = ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32")
    result = train_model(model, examples or _uneven_examples(), config, tmp_path / name)
    return load_file(str(result.adapter_dir / "adapter_model.safetensors")), result


@pytest.mark.parametrize("loss", ["sum", "mean"])
def test_the_step_is_the_same_however_the_batch_is_cut(tiny_model_dir, tmp_path, loss):
    """One step of 6 examples as 1 x 6, 2 x 3, 3 x 2, 6 x 1 and unequal micro-batches of 4 + 2: the
    same gradient, the mean over the step's examples of weight * example loss."""
    whole, _ = _one_step(tiny_model_dir, tmp_path, "whole", 6, loss=loss)
    for per_device in (3, 2, 1, 4):  # 4: micro-batches of 4 and 2 in one step
        weights, result = _one_step(tiny_model_dir, tmp_path, f"m{per_device}", per_device, loss=loss)
        assert result.steps == 1
        for name, value in whole.items():
            assert torch.allclose(weights[name], value, atol=1e-5), (per_device, name)


def test_the_papers_loss_sums_the_completion_tokens():
    """ "sum": weight * -log p(y | x), the sum over the completion's tokens (the paper's R * log p);
    "mean": its per-token mean; both averaged over the examples given."""
    from restpg.training.train import example_losses

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, 2, -100, -100]])
    log_p = torch.log_softmax(logits, dim=-1)
    first = -(log_p[0, 2, 3] + log_p[0, 3, 4] + log_p[0, 4, 5])
    second = -(log_p[1, 1, 1] + log_p[1, 2, 2])
    assert example_losses(logits, labels, "sum").tolist() == pytest.approx([first.item(), second.item()], rel=1e-5)
    assert example_losses(logits, labels, "mean").tolist() == pytest.approx(
        [first.item() / 3, second.item() / 2], rel=1e-5
    )
    weight = torch.tensor([0.7, 0.3])
    expected = (0.7 * first + 0.3 * second) / 4  # four examples in the step, two of them here
    assert weighted_completion_loss(logits, labels, weight, "sum", examples=4) == pytest.approx(expected.item())
    assert TrainConfig().loss == "sum"
    with pytest.raises(ValueError, match="--loss: must be one of sum, mean"):
        TrainConfig(loss="tokens")


def test_steps_per_epoch_count_the_examples_of_every_process(monkeypatch):
    config = TrainConfig(batch_size=4, per_device_batch_size=1)
    assert config.gradient_accumulation_steps == 4 and config.steps_per_epoch(8) == 2
    monkeypatch.setenv("WORLD_SIZE", "2")  # 2 processes x 2 micro-batches of 1: still 4 examples a step
    assert config.gradient_accumulation_steps == 2 and config.steps_per_epoch(8) == 2
    assert config.steps_per_epoch(9) == 3


GRADIENT_RUNNER = """
import json, sys
import torch
from pathlib import Path
from safetensors.torch import load_file
sys.path.insert(0, sys.argv[3])
from helpers import fast_train_config
from restpg.inference.models import ModelConfig
from restpg.training.train import TrainingExample, train_model
examples = [TrainingExample(f"prompt {i} " * (1 + i), "the answer is " * (1 + 3 * (i % 3)), 0.5 + i / 5) for i in range(4)]
config = fast_train_config(learning_rate=0.5, optimizer="sgd", max_steps=1, batch_size=4,
    per_device_batch_size=int(sys.argv[2]), weight_decay=0.0, max_grad_norm=1e9, lora_r=2, lora_alpha=4, save_steps=1)
train_model(ModelConfig(model=sys.argv[1], device="cpu", dtype="float32"), examples, config, Path(sys.argv[4]))
"""


def test_two_processes_take_the_step_of_one(tiny_model_dir, tmp_path):
    """Batch 4 as 1 process x 4, 4 x 1, and 2 processes (gloo) x 2 micro-batches of 1: the same step."""
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    runner = tmp_path / "runner.py"
    runner.write_text(GRADIENT_RUNNER)
    tests = str(Path(__file__).resolve().parents[1])  # helpers.py
    weights = {}
    for name, per_device, processes in (("one-by-4", 4, 1), ("four-by-1", 1, 1), ("two-processes", 1, 2)):
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
        command = [*launch, str(runner), str(tiny_model_dir), str(per_device), tests, str(tmp_path / name)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        weights[name] = load_file(str(tmp_path / name / "adapter" / "adapter_model.safetensors"))
    for name in ("four-by-1", "two-processes"):
        for key, value in weights["one-by-4"].items():
            assert torch.allclose(weights[name][key], value, atol=1e-5), (name, key)


def test_a_step_at_the_papers_rate_rounds_away_in_pure_bf16_and_not_over_master_weights(tiny_model_dir, tmp_path):
    """Full fine-tuning at the paper's 5e-6: an update in pure bf16 is below half a unit in the last
    place of most weights and is lost; restpg keeps fp32 master weights and computes in bf16
    autocast, and one step moves every weight."""
    from transformers import AutoModelForCausalLM

    from restpg.training.train import trainable_weights, weights_changed_fraction

    examples = [TrainingExample("say the word", "banana banana banana")] * 4
    # the failure mode: the weights themselves in bf16, one Adafactor step (the paper's optimizer)
    from transformers.optimization import Adafactor

    pure = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    before = trainable_weights(pure)
    batch = WeightedCollator(0)(tokenize_examples(load_tokenizer_of(tiny_model_dir), examples, TrainConfig()))
    labels = batch.pop("labels")
    batch.pop("weight")
    optimizer = Adafactor(pure.parameters(), lr=5e-6, scale_parameter=False, relative_step=False, warmup_init=False)
    logits = pure(**batch).logits
    weighted_completion_loss(logits[:, :-1], labels[:, 1:], torch.ones(len(examples)), "sum").backward()
    optimizer.step()
    lost = weights_changed_fraction(before, pure)
    # restpg's full fine-tuning in bf16 (the paper preset's precision), the same step
    config = fast_train_config(
        finetuning="full", learning_rate=5e-6, optimizer="adafactor", max_steps=1, batch_size=4, per_device_batch_size=4
    )
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    result = train_model(ModelConfig(model=str(tiny_model_dir), dtype="bfloat16"), examples, config, tmp_path / "full")
    trained = AutoModelForCausalLM.from_pretrained(result.adapter_dir, dtype=torch.float32)
    kept = weights_changed_fraction(trainable_weights(start), trained)
    print(f"weights changed by one step at 5e-6: pure bf16 {lost:.1%}, fp32 master weights {kept:.1%}")
    assert lost < 0.3 and kept > 0.95, (lost, kept)
    assert next(trained.parameters()).dtype == torch.float32  # the master weights are what is saved


def load_tokenizer_of(folder):
    from restpg.inference.models import load_tokenizer

    return load_tokenizer(str(folder))


def test_lora_adapters_train_in_fp32_over_a_bf16_base(tiny_model_dir, tmp_path):
    from restpg.inference.hardware import Precision
    from restpg.training.train import build_trainable_model, mixed_precision

    config = fast_train_config()
    model, _ = build_trainable_model(ModelConfig(model=str(tiny_model_dir)), config, Precision(torch.bfloat16, "test"))
    trainable = {name: p.dtype for name, p in model.named_parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert trainable and set(trainable.values()) == {torch.float32} and all("lora_" in n for n in trainable)
    assert frozen == {torch.bfloat16}
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    bf16 = Precision(torch.bfloat16, "test")
    assert mixed_precision(config, bf16, cuda) == {"bf16": True, "fp16": False}
    assert mixed_precision(dataclasses.replace(config, finetuning="full"), bf16, cpu)["bf16"]
    assert mixed_precision(config, Precision(torch.float32, "test"), cuda) == {"bf16": False, "fp16": False}
    # one step at LoRA's rate over the bf16 base moves every adapter weight
    from restpg.training.train import trainable_weights, weights_changed_fraction

    examples = [TrainingExample("say the word", "banana banana banana")] * 4
    result = train_model(
        ModelConfig(model=str(tiny_model_dir), dtype="bfloat16"),
        examples,
        fast_train_config(max_steps=1, batch_size=4, per_device_batch_size=4, learning_rate=1e-4),
        tmp_path / "lora",
    )
    from safetensors.torch import load_file

    saved = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert {v.dtype for v in saved.values()} == {torch.float32}
    lora_b = [v for n, v in saved.items() if "lora_B" in n]
    assert all(v.abs().min() > 0 for v in lora_b)  # B starts at zero: every entry moved
    del trainable_weights, weights_changed_fraction


def test_validation_leaves_the_random_draws_of_training_alone(tiny_model_dir, tmp_path):
    """select_by "reward" generates with its own seeds at every save: training (dropout, order) must
    draw the same random numbers as without validation, so the weights are the same."""
    import random

    import numpy
    from safetensors.torch import load_file

    examples = [TrainingExample(f"say word {i}", "banana " * (1 + i)) for i in range(4)]
    config = fast_train_config(lora_dropout=0.3, max_steps=4, batch_size=1, per_device_batch_size=1, save_steps=1)
    rewards = []

    def quiet(model):
        rewards.append(len(rewards))
        return float(len(rewards))  # rising: the last checkpoint is kept

    def reseeding(model):
        torch.manual_seed(123)
        random.seed(123)
        numpy.random.seed(123)
        torch.rand(10), random.random(), numpy.random.rand()
        return quiet(model)

    weights = {}
    for name, validate in (("quiet", quiet), ("reseeding", reseeding)):
        result = train_model(
            ModelConfig(model=str(tiny_model_dir), dtype="float32"),
            examples,
            dataclasses.replace(config, select_by="reward"),
            tmp_path / name,
            validate=validate,
        )
        assert result.selected_step == 4
        weights[name] = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    for key, value in weights["quiet"].items():
        assert torch.equal(weights["reseeding"][key], value), key


def test_a_stage_with_one_checkpoint_validates_nothing(tiny_model_dir, tmp_path):
    """The paper's rule picks among validated checkpoints; with one (the last step) there is nothing
    to pick, and generating the validation answers would only cost time."""
    calls = []
    config = fast_train_config(max_steps=2, save_steps=None, select_by="reward", batch_size=2)
    examples = [TrainingExample("say the word", "banana")] * 4  # one epoch: 2 steps, one checkpoint
    result = train_model(
        ModelConfig(model=str(tiny_model_dir), dtype="float32"),
        examples,
        config,
        tmp_path / "run",
        validate=lambda model: calls.append(1) or 0.5,
    )
    selection = json.loads((tmp_path / "run" / "checkpoint_selection.json").read_text())
    assert not calls and result.steps == 2 and selection["validated"] == [] and "nothing to choose" in selection["note"]
    assert json.loads((tmp_path / "run" / "train_result.json").read_text())["steps"] == 2
