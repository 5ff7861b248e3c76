"""Linear layers packed for oneDNN (restpg.inference.packed_linear): the same products as F.linear, on the tiny
model and on the real default model, and training still through F.linear."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from restpg.inference.models import (
    DEFAULT_MODEL,
    GenerationSettings,
    ModelConfig,
    generate,
    load_adapter,
    load_merged,
    load_model,
    use_adapter,
)
from restpg.inference.packed_linear import PackedLinear, pack_linear_layers
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
    """The packed weight is a copy, used in inference: after an in-place change (an adapter merged)
    the layer still multiplies by the old weights, until it is packed again."""
    torch.manual_seed(0)
    layer = packed_copy(torch.nn.Linear(16, 8, bias=False))
    old = layer.weight.detach().clone()
    with torch.no_grad():
        layer.weight.data += 1.0
    x = torch.randn(2, 16)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), F.linear(x, old), **TOLERANCE[torch.float32])  # the packed copy
    holder = torch.nn.Sequential(layer)
    assert pack_linear_layers(holder, measure=FASTER).layers == 1 and holder[0] is layer
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight), **TOLERANCE[torch.float32])


def test_packing_is_measured_before_it_is_used():
    """A CPU where the packed product is not measured faster keeps F.linear, and says why; layers
    packed earlier drop their (now stale) copies. So does a model that is not on a CPU."""
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    assert pack_linear_layers(model, measure=FASTER).layers == 2
    packing = pack_linear_layers(model, measure=lambda *shape: 1.0)
    assert packing.layers == 0 and "not packed: measured 1.00x" in packing.reason and "16x32" in packing.reason
    assert all(m.packed is None for m in model.modules() if isinstance(m, PackedLinear))
    packing = pack_linear_layers(model.to("meta"), measure=FASTER)
    assert packing.layers == 0 and packing.reason == "not packed: not on a CPU"


def test_only_plain_linear_layers_are_packed():
    """A subclass of nn.Linear (a quantized layer, say) keeps its own forward."""

    class Doubled(torch.nn.Linear):
        def forward(self, input):
            return 2 * super().forward(input)

    model = torch.nn.Sequential(Doubled(16, 32), torch.nn.Linear(32, 8))
    assert pack_linear_layers(model, measure=FASTER).layers == 1
    assert type(model[0]) is Doubled and isinstance(model[1], PackedLinear)


def test_a_trainable_bias_or_input_takes_f_linear():
    torch.manual_seed(0)
    layer = packed_copy(torch.nn.Linear(16, 8))
    layer.weight.requires_grad_(False)
    layer(torch.randn(2, 16)).sum().backward()  # the bias alone trains
    assert layer.bias.grad is not None and torch.equal(layer.bias.grad, torch.full((8,), 2.0))


def test_a_packed_model_copies_and_pickles_without_its_packed_weights():
    """oneDNN's packed tensor has no storage to copy: a copy multiplies through F.linear."""
    layer = packed_copy(torch.nn.Linear(16, 8))
    copied, restored = copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))
    assert layer.packed is not None and copied.packed is None and restored.packed is None
    x = torch.randn(3, 16)
    with torch.inference_mode():
        for other in (copied, restored):
            torch.testing.assert_close(other(x), layer(x), **TOLERANCE[torch.float32])


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


def test_load_model_and_load_merged_pack_where_measured_faster(tiny_model_dir, tmp_path):
    """load_model packs (pack_weights, the default; conftest's packing_pays stands for the measurement)
    and peft attaches LoRA to its packed layers (the
    page's versions); load_merged packs after merging, so the merged weights are the packed ones:
    the same greedy outputs as unpacked, attached or merged."""
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


def test_the_real_model_packed_writes_what_it_writes_unpacked(default_model_dir):
    """SmolLM2-135M-Instruct, fp32: the packed model's logits equal the unpacked model's to 1e-3 and
    its greedy continuations are the same texts. (Samples can differ: the sums' order differs, and
    a draw at a boundary goes the other way; bench/bench.py --only packing counts them.)"""
    config = ModelConfig(model=DEFAULT_MODEL, device="cpu", dtype="float32")
    packed, plain = load_model(config), load_model(ModelConfig(**{**config.__dict__, "pack_weights": False}))
    assert packed.packing.layers == 211 and plain.packing.layers == 0  # 30 layers x 7, and the head
    prompts = ["Write one sentence about a coffee grinder.", "Name three colours of the rainbow."]
    ids = packed.tokenizer(prompts[:1], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        torch.testing.assert_close(packed.model(ids).logits, plain.model(ids).logits, atol=1e-3, rtol=1e-3)
    assert generate(packed, prompts, GREEDY) == generate(plain, prompts, GREEDY)


def test_one_row_goes_through_f_linear_where_packing_loses_at_one_row(monkeypatch):
    """Each decoding shape uses the weights measured fastest for it: packed for the E-step's rows,
    F.linear for one sequence's single row when the one-row measurement says packing is slower."""
    import restpg.inference.packed_linear as packed_linear

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 16))
    packing = pack_linear_layers(model, measure=lambda dtype, i, o, rows: 2.0 if rows > 1 else 0.5)
    assert packing.layers == 2 and "0.50x at one row: F.linear for one sequence" in packing.reason
    calls = []
    monkeypatch.setattr(
        packed_linear,
        "packed_product",
        lambda *args: calls.append(args[0].shape) or F.linear(*args[:1], model[0].weight, model[0].bias),
    )
    with torch.inference_mode():
        model[0](torch.randn(1, 1, 16))  # one row: F.linear, no packed call
        assert calls == []
        model[0](torch.randn(4, 16))  # four rows: the packed copy
    assert calls == [torch.Size([4, 16])]
    packing = pack_linear_layers(model, measure=FASTER)
    assert all(layer.single_row_packed for layer in model) and "packed for one sequence" in packing.reason
