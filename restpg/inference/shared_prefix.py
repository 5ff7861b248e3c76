"""Logits at the last positions of token rows that share prefixes, each shared prefix run once.

The judge's prompts all start with the same rubric, and the m answers of one E-step request share
its instruction and ground truth too. Instead of running every row whole, the prefix that all rows
share (the root: chat template and rubric) runs once per call; within a batch, each group of rows
the caller names (the judge: one request's instruction and ground truth) runs the part its rows
share once; each row then runs only its own tokens (its answer), on a copy of its group's keys and
values. Rows of different lengths are padded in the middle (masked out, positions counting
real tokens only), so every row's logits equal those of the row run alone, up to float rounding
(tests/inference/test_shared_prefix.py).

Models with sliding-window attention layers (Gemma 2/3, Mistral) keep only a window of keys, which
this copying does not model: their rows run whole, left-padded, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every row shares."""
    if not rows:
        return 0
    first, length = rows[0], min(len(r) for r in rows)
    for row in rows[1:]:
        n = 0
        while n < length and row[n] == first[n]:
            n += 1
        length = n
    return length


def shares_prefixes(model) -> bool:
    """Whether the model's attention allows prefix copying (no sliding-window layers)."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    layer_types = getattr(config, "layer_types", None) or []
    return getattr(config, "sliding_window", None) is None and all(t == "full_attention" for t in layer_types)


@dataclass
class Root:
    """The prefix every row of a call shares, with its keys and values (one row per layer)."""

    tokens: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]


def _cache(model, layers: list[tuple[torch.Tensor, torch.Tensor]], index: torch.Tensor):
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(k[index], v[index]) for k, v in layers], config=model.config)


def _right_aligned(parts: Sequence[Sequence[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows padded on the left to one width, and the mask of their real tokens."""
    width = max(len(p) for p in parts)
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in parts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in parts], device=device)
    return ids, mask


def _positions(mask: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Positions of the new tokens: each row's real tokens continue from its own start."""
    return (starts[:, None] + mask.cumsum(-1) - 1).clamp(min=0)


def root_of(model, rows: Sequence[Sequence[int]], keep: int, device) -> Root:
    """Runs the prefix every row shares (leaving each row at least ``keep`` + 1 tokens of its own)."""
    length = max(0, min(common_prefix_length(rows), min(len(r) for r in rows) - keep - 1))
    if length == 0 or not shares_prefixes(model):
        return Root([], [])
    tokens = list(rows[0][:length])
    out = model(input_ids=torch.tensor([tokens], device=device), use_cache=True, logits_to_keep=1)
    return Root(tokens, [(layer.keys, layer.values) for layer in out.past_key_values.layers])


def last_logits(
    model, rows: Sequence[Sequence[int]], labels: Sequence[object], keep: int, pad: int, root: Root, device
) -> torch.Tensor:
    """Logits (rows x ``keep`` x vocabulary) at each row's last ``keep`` positions. Every row starts
    with ``root.tokens``; consecutive rows with the same label form a group, and the prefix a group's
    rows share runs once for them."""
    if not root.tokens:  # nothing shared (or a sliding-window model): every row whole, left-padded
        ids, mask = _right_aligned(rows, pad, device)
        positions = _positions(mask, mask.new_zeros(len(rows)))
        return model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
    base = len(root.tokens)
    groups: list[list[int]] = []  # row indices, consecutive rows with one label together
    for n, label in enumerate(labels):
        if groups and labels[groups[-1][0]] == label:
            groups[-1].append(n)
        else:
            groups.append([n])
    # Each group's shared part, leaving every row at least ``keep`` tokens of its own (the positions
    # read); when no group has two rows, every row runs from the root in one pass.
    ends = [
        max(base, min(common_prefix_length([rows[i] for i in g]), min(len(rows[i]) for i in g) - keep))
        if any(len(other) > 1 for other in groups)
        else base
        for g in groups
    ]
    middles = [rows[g[0]][base:end] for g, end in zip(groups, ends)]
    past_mask = torch.ones(len(groups), base, dtype=torch.long, device=device)
    cache = _cache(model, root.layers, torch.zeros(len(groups), dtype=torch.long, device=device))
    if any(middles):
        ids, mask = _right_aligned([m or [pad] for m in middles], pad, device)
        if not all(middles):  # a group with nothing beyond the root: its one stand-in token is masked
            mask[[n for n, m in enumerate(middles) if not m], -1] = 0
        model(
            input_ids=ids,
            attention_mask=torch.cat([past_mask, mask], dim=1),
            position_ids=_positions(mask, torch.full((len(groups),), base, device=device)),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        past_mask = torch.cat([past_mask, mask], dim=1)
    owner = torch.tensor([k for k, g in enumerate(groups) for _ in g], device=device)
    cache.batch_select_indices(owner)
    tails = [rows[n][ends[k] :] for k, g in enumerate(groups) for n in g]
    ids, mask = _right_aligned(tails, pad, device)
    starts = torch.tensor([ends[k] for k, g in enumerate(groups) for _ in g], device=device)
    logits = model(
        input_ids=ids,
        attention_mask=torch.cat([past_mask[owner], mask], dim=1),
        position_ids=_positions(mask, starts),
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=keep,
    ).logits
    return logits
