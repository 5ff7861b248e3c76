import pytest
import torch
from safetensors.torch import load_file

from helpers import Crash, crash_at_step, fast_train_config
from restpg.inference.hardware import choose_precision
from restpg.inference.models import ModelConfig
from restpg.training.lora_dropout import BulkDropout, use_bulk_lora_dropout
from restpg.training.train import TrainConfig, TrainingExample, build_trainable_model, train_model


def test_elements_are_dropped_with_probability_p_and_kept_ones_rescaled():
    torch.manual_seed(0)
    dropout = BulkDropout(0.05)
    x = torch.ones(1000, 1001)  # an odd count: the last 64-bit draw is used in part
    y = dropout(x)
    dropped = (y == 0).double().mean().item()
    p = dropout.threshold / 65536
    assert abs(p - 0.05) < 1 / 131072
    sigma = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(dropped - p) < 5 * sigma
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)))
    assert abs(y.double().mean().item() - 1) < 5 * sigma / (1 - p)  # the expected output is the input


@pytest.mark.parametrize("p", [0.05, 0.5])
def test_neighbouring_elements_are_dropped_independently(p):
    """Four elements come from each 64-bit draw: each must get bits of its own (at p = 0.5 only a
    lane's top bit decides, at 0.05 its top five)."""
    torch.manual_seed(1)
    dropout = BulkDropout(p)
    rate = dropout.threshold / 65536
    dropped = ~dropout.keep_mask(torch.Size([400_000, 4]))
    n = dropped.shape[0]
    for lane in range(4):
        assert abs(dropped[:, lane].double().mean().item() - rate) < 5 * (rate * (1 - rate) / n) ** 0.5
    for a, b in [(0, 1), (1, 2), (2, 3), (0, 3)]:
        both = (dropped[:, a] & dropped[:, b]).double().mean().item()
        assert abs(both - rate**2) < 5 * (rate**2 * (1 - rate**2) / n) ** 0.5  # independent: P = rate^2


def test_masks_follow_torch_seed_and_evaluation_mode_keeps_everything():
    dropout = BulkDropout(0.3)
    x = torch.randn(64, 96)
    torch.manual_seed(7)
    first = dropout(x)
    torch.manual_seed(7)
    assert torch.equal(dropout(x), first)
    assert not torch.equal(dropout(x), first)  # the next draw differs
    dropout.eval()
    assert torch.equal(dropout(x), x)


def test_gradient_flows_through_the_kept_elements_only():
    torch.manual_seed(3)
    dropout = BulkDropout(0.25)
    x = torch.randn(32, 48, requires_grad=True)
    y = dropout(x)
    y.sum().backward()
    kept = y.detach() != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 1 / (1 - dropout.threshold / 65536)))
    assert torch.all(x.grad[~kept] == 0)


@pytest.mark.parametrize("p", [0, 1, -0.1, 1 - 1e-6])
def test_a_probability_outside_0_1_is_refused(p):
    with pytest.raises(ValueError, match="dropout probability"):
        BulkDropout(p)


def test_every_lora_dropout_is_replaced_and_the_adapter_unchanged(tiny_model_dir):
    model_config = ModelConfig(model=str(tiny_model_dir), dtype="float32")
    precision = choose_precision("float32", torch.device("cpu"))
    with_dropout, _ = build_trainable_model(model_config, TrainConfig(lora_dropout=0.05), precision)
    lora_layers = [
        m for m in with_dropout.modules() if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict)
    ]
    assert lora_layers
    assert all(isinstance(d, BulkDropout) and d.p == 0.05 for m in lora_layers for d in m.lora_dropout.values())
    assert not any(type(m) is torch.nn.Dropout for m in with_dropout.modules() if m is not None)
    without, _ = build_trainable_model(model_config, TrainConfig(lora_dropout=0.0), precision)
    mine, theirs = with_dropout.state_dict(), without.state_dict()  # the same seed: the same adapter
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert not any(isinstance(m, BulkDropout) for m in without.modules())  # nn.Identity left alone
    assert use_bulk_lora_dropout(without) == 0


def test_training_with_dropout_learns_and_a_resumed_run_repeats_itself(tiny_model_dir, tmp_path):
    """Dropout through the bulk masks (0.3: masks that matter): the adapter learns, and a run stopped
    after a checkpoint and resumed ends at the same weights as one that was not stopped (the masks
    come from torch's generator, whose state the Trainer's checkpoint keeps)."""
    examples = [TrainingExample("say the word", "banana banana banana")] * 6  # 3 steps an epoch
    config = fast_train_config(learning_rate=5e-2, lora_dropout=0.3)  # a checkpoint at step 2, mid-epoch
    model = ModelConfig(model=str(tiny_model_dir), dtype="float32")
    whole = train_model(model, examples, config, tmp_path / "whole")
    losses = [h["loss"] for h in whole.log_history if "loss" in h]
    assert losses[-1] < losses[0]

    with pytest.raises(Crash):
        train_model(model, examples, config, tmp_path / "resumed", on_step=crash_at_step(3))
    resumed = train_model(model, examples, config, tmp_path / "resumed")
    a = load_file(whole.adapter_dir / "adapter_model.safetensors")
    b = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    again = train_model(model, examples, config, tmp_path / "again")
    c = load_file(again.adapter_dir / "adapter_model.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)  # the same seed, the same masks
