"""LoRA dropout with its mask drawn in bulk on a CPU: the same dropout, a cheaper random source.

peft applies ``nn.Dropout(p)`` to the input of every LoRA layer (210 of them in SmolLM2-135M), and on
a CPU torch draws a dropout mask with one call of its generator per element (``bernoulli_``). In a
cpu-small M-step that was 15% of the operators' time in fp32 (bench/profile_ops.py --only mstep),
more than any cost but the matrix products and attention. Here one 64-bit draw gives four elements
16 random bits each; an element is dropped when its bits fall under ``round(p * 65536)``, so the drop
probability is p to within 1/131072 (0.05 -> 0.0500031), and kept elements are scaled by the inverse
of the keep probability, so the layer's expected output is its input, as with ``nn.Dropout``: the
same dropout in distribution, other masks than ``nn.Dropout`` would draw. The masks come from
torch's global generator (seeded by the Trainer, its state kept in checkpoints), so a run repeats
itself and a resumed run continues it. Autograd keeps the boolean mask (1 byte an element) instead
of one in the input's dtype. On other devices, and in evaluation mode, it is ``F.dropout``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_LEVELS = 1 << 16  # 16 random bits per element


class BulkDropout(torch.nn.Module):
    """``nn.Dropout(p)`` whose CPU mask takes 16 random bits an element, four elements per draw."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 < p < 1:
            raise ValueError(f"dropout probability must be in (0, 1), got {p}")
        self.p = p
        self.threshold = round(p * _LEVELS)  # dropped: bits (as unsigned) below this
        if self.threshold >= _LEVELS:
            raise ValueError(f"dropout probability {p} is too close to 1 for 16-bit masks (at most 1 - 1/65536)")
        self.scale = _LEVELS / (_LEVELS - self.threshold)  # 1 / keep probability

    def keep_mask(self, shape: torch.Size) -> torch.Tensor:
        """True where an element is kept, each with probability 1 - threshold / 65536."""
        n = shape.numel()
        draws = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
        bits = draws.view(torch.int16)[:n].view(shape)  # uniform on [-32768, 32767]
        return bits >= self.threshold - _LEVELS // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu":
            return F.dropout(x, self.p, self.training)
        return torch.where(self.keep_mask(x.shape), x * self.scale, 0.0)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_bulk_lora_dropout(model: torch.nn.Module) -> int:
    """Replaces every LoRA layer's ``nn.Dropout`` (peft's ``lora_dropout``) with :class:`BulkDropout`
    of the same p; returns how many. A LoRA layer without dropout (``nn.Identity``) is left alone."""
    replaced = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if type(dropout) is torch.nn.Dropout and dropout.p > 0:
                dropouts[name] = BulkDropout(dropout.p)
                replaced += 1
    return replaced
