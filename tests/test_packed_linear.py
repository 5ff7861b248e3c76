"""Linear layers packed for oneDNN (restpg.packed_linear): the same products as F.linear, on the tiny
model and on the real default model, and training still through F.linear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from restpg import packed_linear
from restpg.models import (
    DEFAULT_MODEL,
    GenerationSettings,
    ModelConfig,
    generate,
    load_adapter,
    load_merged,
    load_model,
    use_adapter,
)
from restpg.packed_linear import PackedLinear, pack_linear_layers
from tests.helpers import make_adapter

GREEDY = GenerationSettings(max_new_tokens=12, temperature=0.0, batch_size=2)
FASTER = lambda *shape: 2.0  # noqa: E731  (a measurement that says packing pays)
TOLERANCE = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.bfloat16: dict(atol=5e-2, rtol=2e-2)}


def packed_copy(linear: torch.nn.Linear) -> torch.nn.Module:
    holder = torch.nn.Sequential(linear)
    packing = pack_linear_layers(holder, measure=FASTER)
    assert packing.layers == 1
    return holder[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 48), (32, 48), (3, 5, 48)])
def test_a_packed_layer_multiplies_as_f_linear_does(dtype, bias, shape):
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 80, bias=bias).to(dtype)
    x = torch.randn(*shape).to(dtype)
    expected = F.linear(x, linear.weight, linear.bias)
    layer = packed_copy(linear)
    assert isinstance(layer, PackedLinear) and layer.weight is linear.weight
    with torch.inference_mode():
        out = layer(x)
    assert out.shape == expected.shape and out.dtype == dtype
    torch.testing.assert_close(out, expected.detach(), **TOLERANCE[dtype])


def test_training_through_a_packed_layer_is_f_linears():
    """With a gradient to compute, the layer is F.linear: the same output and gradients."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 8)
    x = torch.randn(4, 16, requires_grad=True)
    F.linear(x, linear.weight, linear.bias).square().sum().backward()
    expected = (x.grad.clone(), linear.weight.grad.clone())
    x.grad, linear.weight.grad = None, None
    layer = packed_copy(linear)
    layer(x).square().sum().backward()
    assert torch.equal(x.grad, expected[0]) and torch.equal(layer.weight.grad, expected[1])


def test_packing_afresh_follows_weights_changed_in_place():
    """The packed weight is a copy: after an in-place change (an adapter merged), packing again
    makes the layer compute with the new weights."""
    torch.manual_seed(0)
    layer = packed_copy(torch.nn.Linear(16, 8, bias=False))
    with torch.no_grad():
        layer.weight.data += 1.0
    x = torch.randn(2, 16)
    holder = torch.nn.Sequential(layer)
    assert pack_linear_layers(holder, measure=FASTER).layers == 1 and holder[0] is layer
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight), **TOLERANCE[torch.float32])


def test_packing_is_measured_before_it_is_used():
    """A CPU where the packed product is not measured faster keeps F.linear, and says why; so does a
    model that is not on a CPU."""
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    packing = pack_linear_layers(model, measure=lambda *shape: 1.0)
    assert packing.layers == 0 and "not packed: measured 1.00x" in packing.reason and "16x32" in packing.reason
    assert not any(isinstance(m, PackedLinear) for m in model.modules())
    packing = pack_linear_layers(model.to("meta"), measure=FASTER)
    assert packing.layers == 0 and packing.reason == "not packed: not on a CPU"


def test_a_packed_model_keeps_its_ties_state_and_outputs(tiny_model_dir):
    config = ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32", pack_weights=False)
    plain, packed = load_model(config), load_model(config)
    packing = pack_linear_layers(packed.model, measure=FASTER)
    linears = [m for m in packed.model.modules() if isinstance(m, torch.nn.Linear)]
    assert packing.layers == len(linears) == 2 * 7 + 1  # q k v o gate up down per layer, and the head
    assert all(isinstance(m, PackedLinear) for m in linears)
    assert packed.model.lm_head.weight is packed.model.model.embed_tokens.weight  # still tied
    state, plain_state = packed.model.state_dict(), plain.model.state_dict()
    assert state.keys() == plain_state.keys() and all(torch.equal(state[k], plain_state[k]) for k in state)
    ids = packed.tokenizer(["a prompt of a few tokens"], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        torch.testing.assert_close(packed.model(ids).logits, plain.model(ids).logits, atol=1e-4, rtol=1e-4)


def test_load_model_and_load_merged_pack_where_measured_faster(tiny_model_dir, tmp_path, monkeypatch):
    """load_model packs (pack_weights, the default) and peft attaches LoRA to its packed layers (the
    page's versions); load_merged packs after merging, so the merged weights are the packed ones:
    the same greedy outputs as unpacked, attached or merged."""
    monkeypatch.setattr(packed_linear, "packing_speedup", lambda *shape: 2.0)
    config = ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32")
    loaded = load_model(config)
    assert loaded.packing.layers == 15 and "packed for oneDNN" in loaded.packing.reason
    assert load_model(ModelConfig(**{**config.__dict__, "pack_weights": False})).packing.layers == 0
    adapter = make_adapter(tiny_model_dir, tmp_path / "round1", seed=3)
    merged = load_merged(config, adapter)
    unpacked = load_merged(ModelConfig(**{**config.__dict__, "pack_weights": False}), adapter)
    assert merged.packing.layers == 15 and unpacked.packing.layers == 0
    prompts = ["tell me something", "a much longer prompt " * 5]
    base = generate(loaded, prompts, GREEDY)
    assert generate(merged, prompts, GREEDY) == generate(unpacked, prompts, GREEDY) != base  # the adapter is in
    load_adapter(loaded, adapter)
    assert isinstance(loaded.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer, PackedLinear)
    assert generate(loaded, prompts, GREEDY) == generate(unpacked, prompts, GREEDY)
    use_adapter(loaded, None)
    assert generate(loaded, prompts, GREEDY) == base


def test_the_real_model_packed_writes_what_it_writes_unpacked(default_model_dir, monkeypatch):
    """SmolLM2-135M-Instruct, fp32: the packed model's logits equal the unpacked model's to 1e-3 and
    its greedy continuations and E-step samples (same seed) are the same texts."""
    monkeypatch.setattr(packed_linear, "packing_speedup", lambda *shape: 2.0)
    config = ModelConfig(model=DEFAULT_MODEL, device="cpu", dtype="float32")
    packed, plain = load_model(config), load_model(ModelConfig(**{**config.__dict__, "pack_weights": False}))
    assert packed.packing.layers == 211 and plain.packing.layers == 0  # 30 layers x 7, and the head
    prompts = ["Write one sentence about a coffee grinder.", "Name three colours of the rainbow."]
    ids = packed.tokenizer(prompts[:1], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        torch.testing.assert_close(packed.model(ids).logits, plain.model(ids).logits, atol=1e-3, rtol=1e-3)
    sampled = GenerationSettings(max_new_tokens=16, temperature=0.7, num_samples=2, batch_size=2, seed=0)
    for settings in (GREEDY, sampled):
        assert generate(packed, prompts, settings) == generate(plain, prompts, settings)
