"""One personalized generation, end to end: retrieve, prompt, generate, parse, score.

The CLI's ``generate`` and the app's Generate button both call :func:`personalize`; it is
:func:`restpg.evaluation.evaluate.predict` with the reasoning prompt, scored against the user's real text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..data.longlamp import Record
from ..data.prompts import ParsedOutput, PromptSettings
from ..data.retrieval import PAPER_TOP_K, RetrievedItem
from ..inference.models import Generation, GenerationSettings, LoadedModel
from .evaluate import predict
from .metrics import LexicalMetrics


@dataclass(frozen=True)
class PersonalizedOutput:
    record: Record
    retrieved: tuple[RetrievedItem, ...]
    prompt: str
    generation: Generation
    parsed: ParsedOutput
    scores: dict[str, float]  # of the parsed response against the user's real text


def personalize(
    loaded: LoadedModel,
    records: Sequence[Record],
    metrics: LexicalMetrics,
    k: int = PAPER_TOP_K,
    generation: GenerationSettings = GenerationSettings(),
    prompt_settings: PromptSettings = PromptSettings(),
    on_batch: Callable[[int], None] | None = None,
) -> list[PersonalizedOutput]:
    """Reasoning + response for each record (first sample of each), scored against its output."""
    predictions = predict(loaded, records, "reasoning", generation, k, prompt_settings, on_batch=on_batch)
    return [
        PersonalizedOutput(
            record,
            first.retrieved,
            first.prompt,
            first.generation,
            first.parsed,
            metrics.score(first.answer, record.output),
        )
        for record, (first, *_) in zip(records, predictions)
    ]
