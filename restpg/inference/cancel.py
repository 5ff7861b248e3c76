"""Cancellation that takes effect within seconds: between generated tokens and inside a training step.

A :class:`threading.Event` is the one signal. Generation checks it after every token
(:func:`stop_criteria`); training checks it at every decoder layer, in the forward pass and in the
backward pass (:func:`cancel_hooks`), so a cancel never waits for a whole step or batch to end.
Finished work (E-step batches, training checkpoints, rounds) is kept by the callers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch


class Cancelled(RuntimeError):
    """The work was cancelled; what had finished before is intact."""


def check(event: threading.Event | None) -> None:
    if event is not None and event.is_set():
        raise Cancelled("cancelled")


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's transformer blocks (LlamaDecoderLayer, GemmaDecoderLayer, GPT2Block, ...)."""
    return [m for m in model.modules() if type(m).__name__.endswith(("DecoderLayer", "Block"))]


@contextlib.contextmanager
def cancel_hooks(model: torch.nn.Module, event: threading.Event | None) -> Iterator[None]:
    """While inside, a set ``event`` raises :class:`Cancelled` at the next decoder layer, forward or backward."""
    if event is None:
        yield
        return

    def before_layer(module, args, kwargs):
        check(event)
        hidden = args[0] if args else kwargs.get("hidden_states")
        if isinstance(hidden, torch.Tensor) and hidden.requires_grad:
            hidden.register_hook(lambda grad: check(event))  # runs when backward reaches this layer
        return None

    handles = [layer.register_forward_pre_hook(before_layer, with_kwargs=True) for layer in decoder_layers(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def stop_criteria(event: threading.Event | None):
    """A transformers StoppingCriteriaList that ends generation at the next token once ``event`` is set."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopWhenSet(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full(
                (input_ids.shape[0],), event is not None and event.is_set(), dtype=torch.bool, device=input_ids.device
            )

    return StoppingCriteriaList([StopWhenSet()])
