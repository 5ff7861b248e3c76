"""Linear layers whose inference on a CPU multiplies by a copy of the weight packed for oneDNN.

torch's eager ``F.linear`` on a CPU hands each product to a general matrix multiply that copies the
weight's blocks into its own layout on every call. oneDNN can pack a weight once and multiply by the
packed copy with its small-batch kernels, which measures faster at decoding's few rows (32 a step in
the E-step, one in the page's streaming): ``torch.ops.mkldnn._reorder_linear_weight`` packs the weight, and
``torch.ops.mkldnn._linear_pointwise`` multiplies by the packed copy. These are the two operators
torch's own compiler (inductor, ``freezing``) emits for a CPU linear layer; here they are used
without compiling the model.

Measured on a 2-core CPU with ``avx2 avx512f avx512_bf16`` (bench/bench.py --only packing), all of
SmolLM2-135M's weight products: fp32 1.76x at 32 rows (86 -> 152 GFLOP/s), 1.26x at 512; bf16 1.32x
at 32 rows, 0.98x at 512. E-step sampling 1.26x in fp32, 1.13x in bf16 (docs/benchmarks.md, "Decoding: linear weights
packed for oneDNN"). Results equal ``F.linear``'s up to the order of the sums
(tests/inference/test_packed_linear.py). Because that speed is this CPU's, :func:`pack_linear_layers` measures
it on the model's own shape first and packs only where the packed product is faster.

A packed layer is an ``nn.Linear`` (peft attaches LoRA to it as to any linear layer) that keeps its
weight and bias: the state dict and tied weights are unchanged. The packed copy is used only for
inputs on the CPU, in the packed dtype, with no gradient to compute; training, a model moved to
another device or dtype, and every other call go through ``F.linear``. The copy costs as much memory
as the weights (about 0.5 GB for SmolLM2-135M in fp32). Weights changed in place after packing (a
merged adapter) need :func:`pack_linear_layers` again, which packs every layer afresh.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PACKING_MIN_SPEEDUP = 1.1  # packing must beat F.linear by this much on the model's shape to be used
MEASURED_ROWS = 32  # the E-step's decoding batch on a CPU (8 prompts x m = 4)
# One sequence's decoding (the page's streaming, the judge's single calls) multiplies one row at a
# time: a shape of its own. Measured on a 2-core `avx2 avx512f avx512_bf16` CPU, SmolLM2-135M's MLP
# shapes at one row: packed 0.39-0.56x F.linear in fp32, 1.5-2.0x in bf16; at 4 rows and more the
# packed product is faster in both (bench/bench.py --only packing).
SINGLE_ROW = 1


def packing_available() -> bool:
    """Whether this torch has oneDNN's packed linear operators."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (out, in) packed for :func:`packed_product` (oneDNN's layout, for MEASURED_ROWS rows)."""
    with torch.no_grad():
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), MEASURED_ROWS)


def packed_product(input: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(input, weight, bias)`` by the weight packed with :func:`pack_weight` (inference only)."""
    return torch.ops.mkldnn._linear_pointwise(input, packed, bias, "none", [], "")


class PackedLinear(torch.nn.Linear):
    """An ``nn.Linear`` that multiplies by a oneDNN-packed copy of its weight in CPU inference."""

    packed: torch.Tensor | None = None  # None: F.linear
    single_row_packed: bool = True  # False: one-row inputs (one sequence's decoding) go through F.linear

    def pack(self) -> None:
        """Pack the current weight (again)."""
        self.packed = pack_weight(self.weight)

    def unpack(self) -> None:
        self.packed = None

    def __getstate__(self):
        """Copies and pickles leave the packed copy behind (oneDNN's packed tensor has no storage to
        copy): they multiply through F.linear until packed again."""
        state = dict(super().__getstate__())
        state["packed"] = None
        return state

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if (
            self.packed is None
            or input.device.type != "cpu"
            or self.weight.device.type != "cpu"
            or input.dtype != self.packed.dtype
            or self.weight.dtype != self.packed.dtype
            or (not self.single_row_packed and input.numel() == input.shape[-1])
            or (
                torch.is_grad_enabled()
                and (
                    input.requires_grad
                    or self.weight.requires_grad
                    or (self.bias is not None and self.bias.requires_grad)
                )
            )
        ):
            return F.linear(input, self.weight, self.bias)
        return packed_product(input, self.packed, self.bias)


@dataclass(frozen=True)
class Packing:
    """What :func:`pack_linear_layers` did, and why (``restpg generate`` and the benchmarks print it)."""

    layers: int  # linear layers packed; 0: none
    reason: str


def _packed_copy(linear: torch.nn.Linear) -> PackedLinear:
    if isinstance(linear, PackedLinear):
        linear.pack()
        return linear
    layer = PackedLinear(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
    layer.weight = linear.weight  # the same parameters: ties (the head and the embeddings) stay tied
    layer.bias = linear.bias
    layer.train(linear.training)
    layer.pack()
    return layer


def _best_seconds(function, runs: int = 3, calls: int = 5) -> float:
    function()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


@functools.cache
def packing_speedup(
    dtype: torch.dtype, in_features: int, out_features: int, threads: int, rows: int = MEASURED_ROWS
) -> float:
    """How many times faster the packed product is than ``F.linear`` for ``rows`` rows of this shape
    on this CPU (best of three, each way); measured once per process, shape and row count.
    Raises RuntimeError where this torch cannot pack (no oneDNN, a dtype it does not pack)."""
    del threads  # part of the cache key: the speed is that of this many threads
    weight = torch.randn(out_features, in_features).to(dtype)
    rows = torch.randn(rows, in_features).to(dtype)
    packed = pack_weight(weight)
    with torch.no_grad():
        plain = _best_seconds(lambda: F.linear(rows, weight))
        fast = _best_seconds(lambda: packed_product(rows, packed))
    return plain / fast


def _widest_linear(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The model's largest linear layer short of the vocabulary head: the shape most of its
    decoding products have (the MLP's)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    return max(layers, key=lambda m: m.weight.numel(), default=None)


def _unpacked(model: torch.nn.Module, packing: Packing) -> Packing:
    """Drop the packed copies of layers packed earlier (they would be stale): F.linear everywhere."""
    for module in model.modules():
        if isinstance(module, PackedLinear):
            module.unpack()
    return packing


def pack_linear_layers(model: torch.nn.Module, measure=None) -> Packing:
    """Replace each ``nn.Linear`` of a CPU model by a :class:`PackedLinear` (packing afresh any that
    already are one), where this CPU measures the packed product faster on the model's widest
    layer; where it does not, or cannot pack, every layer multiplies through F.linear.
    One-row inputs (one sequence's decoding) use the packed copy only where it is measured faster
    at one row too. ``measure(dtype, in_features, out_features, rows)`` -> speed-up is for tests."""
    parameter = next(model.parameters(), None)
    if parameter is None:
        return Packing(0, "not packed: no parameters")
    if parameter.device.type != "cpu":
        return _unpacked(model, Packing(0, "not packed: not on a CPU"))
    if not packing_available():
        return _unpacked(model, Packing(0, "not packed: this torch has no oneDNN"))
    widest = _widest_linear(model)
    if widest is None:
        return Packing(0, "not packed: no linear layers")
    dtype = widest.weight.dtype
    measure = measure or (lambda dtype, i, o, rows: packing_speedup(dtype, i, o, torch.get_num_threads(), rows))
    try:
        speedup = measure(dtype, widest.in_features, widest.out_features, MEASURED_ROWS)
        single = measure(dtype, widest.in_features, widest.out_features, SINGLE_ROW)
    except RuntimeError as error:  # no packed kernel for this dtype or build
        return _unpacked(model, Packing(0, f"not packed: oneDNN could not pack {dtype}: {error}".splitlines()[0]))
    measured = f"{speedup:.2f}x F.linear at {MEASURED_ROWS} rows of {widest.in_features}x{widest.out_features}"
    if speedup < PACKING_MIN_SPEEDUP:
        return _unpacked(model, Packing(0, f"not packed: measured {measured}"))
    # Plain nn.Linear layers only: a subclass (a quantized layer, say) keeps its own forward.
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) in (torch.nn.Linear, PackedLinear) and child.weight.dtype == dtype
    ]
    copies: dict[int, PackedLinear] = {}  # a layer that appears under two parents is packed once
    try:
        for _, _, child in targets:
            if id(child) not in copies:
                copies[id(child)] = _packed_copy(child)
    except RuntimeError as error:
        return _unpacked(model, Packing(0, f"not packed: oneDNN could not pack a layer: {error}".splitlines()[0]))
    for layer in copies.values():
        layer.single_row_packed = single >= PACKING_MIN_SPEEDUP
    for parent, name, child in targets:
        setattr(parent, name, copies[id(child)])
    megabytes = sum(layer.weight.numel() * layer.weight.element_size() for layer in copies.values()) / 2**20
    return Packing(
        len(copies),
        f"{len(copies)} linear layers packed for oneDNN (measured {measured}; {single:.2f}x at one row: "
        f"{'packed' if single >= PACKING_MIN_SPEEDUP else 'F.linear'} for one sequence; the packed copies "
        f"take about {megabytes:.0f} MiB beside the weights)",
    )
