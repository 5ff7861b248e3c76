"""One personalized generation, end to end: retrieve, prompt, generate, parse, score.

The CLI's ``generate`` and the app's Generate button both call :func:`personalize`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from .longlamp import Record
from .metrics import LexicalMetrics
from .models import Generation, GenerationSettings, LoadedModel, generate
from .prompts import ParsedOutput, PromptSettings, parse_output, personalized_prompt
from .retrieval import PAPER_TOP_K, RetrievedItem, retrieve


@dataclass(frozen=True)
class PersonalizedOutput:
    record: Record
    retrieved: list[RetrievedItem]
    prompt: str
    generation: Generation
    parsed: ParsedOutput
    scores: dict[str, float]  # of the parsed response against the user's real text


def personalize(loaded: LoadedModel, records: Sequence[Record], metrics: LexicalMetrics,
                k: int = PAPER_TOP_K, generation: GenerationSettings = GenerationSettings(),
                prompt_settings: PromptSettings = PromptSettings(),
                on_batch: Callable[[int], None] | None = None) -> list[PersonalizedOutput]:
    """Reasoning + response for each record (first sample of each), scored against its output."""
    retrieved = [retrieve(record, k) for record in records]
    prompts = [personalized_prompt(record.task, record.input, [r.item for r in items], prompt_settings)
               for record, items in zip(records, retrieved)]
    generations = generate(loaded, prompts, generation, on_batch=on_batch)
    outputs = []
    for record, items, prompt, samples in zip(records, retrieved, prompts, generations):
        first = samples[0]
        parsed = parse_output(first.text, truncated=first.truncated)
        outputs.append(PersonalizedOutput(record, items, prompt, first, parsed,
                                          metrics.score(parsed.response, record.output)))
    return outputs
