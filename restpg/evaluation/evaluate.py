"""Predict and score held-out records: the judge score and ROUGE-1 / ROUGE-L / METEOR per record,
their means, and a paired bootstrap interval of a method's difference to a baseline."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import fmean

from ..data.longlamp import Record
from ..data.prompts import ParsedOutput, PromptSettings, answer_of, fitted_prompt
from ..data.retrieval import PAPER_TOP_K, RetrievedItem, retrieve
from ..inference.models import (
    PAPER_INFERENCE_TEMPERATURE,
    PAPER_MAX_INPUT_TOKENS,
    Generation,
    GenerationSettings,
    LoadedModel,
    generate,
    prompt_token_counter,
)
from ..inference.vllm_sampling import VLLMGenerator
from .metrics import METRIC_NAMES, LexicalMetrics

SCORE_NAMES = ("judge",) + METRIC_NAMES


@dataclass(frozen=True)
class Prediction:
    record_id: str
    prompt: str
    retrieved: tuple[RetrievedItem, ...]  # empty for the plain prompt
    generation: Generation
    parsed: ParsedOutput

    @property
    def retrieved_ids(self) -> tuple[str, ...]:
        return tuple(item.item_id for item in self.retrieved)

    @property
    def text(self) -> str:
        return self.generation.text

    @property
    def reasoning(self) -> str:
        return self.parsed.reasoning

    @property
    def answer(self) -> str:
        return self.parsed.response

    @property
    def truncated(self) -> bool:
        return self.generation.truncated


def prompt_for(
    record: Record,
    kind: str,
    k: int = PAPER_TOP_K,
    prompt_settings: PromptSettings = PromptSettings(),
    count_tokens: Callable[[str], int] | None = None,
    budget: int | None = None,
) -> tuple[tuple[RetrievedItem, ...], str]:
    """The retrieved profile items in the prompt (none for the plain prompt) and the prompt of
    ``kind`` for one record; with a token budget, the lowest-ranked items give way
    (:func:`restpg.data.prompts.fit_prompt`), never the request."""
    retrieved = tuple(retrieve(record, k)) if kind != "plain" else ()
    fitted = fitted_prompt(
        kind,
        record.task,
        record.input,
        [x.item for x in retrieved],
        prompt_settings,
        count_tokens,
        budget,
        name=f"record {record.record_id}",
    )
    return retrieved[: len(fitted.items)], fitted.prompt


def predict(
    loaded: LoadedModel | VLLMGenerator,
    records: Sequence[Record],
    kind: str,
    settings: GenerationSettings,
    k: int = PAPER_TOP_K,
    prompt_settings: PromptSettings = PromptSettings(),
    on_batch: Callable[[int], None] | None = None,
    cancel=None,
) -> list[list[Prediction]]:
    """``settings.num_samples`` predictions per record with the current adapter of ``loaded`` (a
    model, or a vLLM engine: restpg.inference.vllm_sampling); ``cancel`` (a threading.Event) stops at the next
    token (see :func:`restpg.inference.models.generate`), an engine at its next call."""
    count = prompt_token_counter(loaded.tokenizer)
    retrieved, prompts = (
        zip(*(prompt_for(r, kind, k, prompt_settings, count, settings.max_input_tokens) for r in records))
        if records
        else ((), ())
    )
    if isinstance(loaded, VLLMGenerator):
        outputs = loaded.generate(prompts, settings, on_batch=on_batch, cancel=cancel)
    else:
        outputs = generate(loaded, prompts, settings, on_batch=on_batch, cancel=cancel)
    return [
        [
            Prediction(record.record_id, prompt, items, sample, answer_of(kind, sample.text, sample.truncated))
            for sample in samples
        ]
        for record, items, prompt, samples in zip(records, retrieved, prompts, outputs)
    ]


def inference_settings(
    max_new_tokens: int, batch_size: int = 16, seed: int = 0, max_input_tokens: int = PAPER_MAX_INPUT_TOKENS
) -> GenerationSettings:
    """The paper's inference: nucleus sampling at temperature 0.1, one output per input."""
    return GenerationSettings(
        max_new_tokens=max_new_tokens,
        temperature=PAPER_INFERENCE_TEMPERATURE,
        batch_size=batch_size,
        seed=seed,
        max_input_tokens=max_input_tokens,
    )


JUDGE_CUT = "judge_prompt_cut"  # 1.0 where the judge's prompt was cut to its window, else 0.0


def score_predictions(
    records: Sequence[Record], answers: Sequence[str], metrics: LexicalMetrics, judge=None
) -> list[dict[str, float]]:
    """Per record: judge score (when a judge is given) and the lexical metrics of the answer."""
    rows = [
        metrics.score(a, r.output) if a.strip() else {name: 0.0 for name in METRIC_NAMES}
        for r, a in zip(records, answers)
    ]
    if judge is not None:
        inputs, outputs = [r.input for r in records], [r.output for r in records]
        for row, value in zip(rows, judge(inputs, outputs, list(answers))):
            row["judge"] = value
        if hasattr(judge, "cut"):  # prompts over the judge's window, cut in the middle: counted
            for row, cut in zip(rows, judge.cut(inputs, outputs, list(answers))):
                row[JUDGE_CUT] = float(cut)
    return rows


def summarize(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    names = [n for n in SCORE_NAMES if rows and n in rows[0]]
    return {name: fmean(row[name] for row in rows) for name in names}


def stratified_means(groups: Sequence[Sequence[float]], samples: int = 10_000, seed: int = 0):
    """(the mean of the groups' means, that statistic over ``samples`` bootstrap resamples, sorted):
    values resampled with replacement within each group (a task), the groups' means averaged, as
    the paper's Table 1 averages its tasks. One group: the plain mean."""
    import numpy

    groups = [numpy.asarray(g, dtype=float) for g in groups if len(g)]
    if not groups:
        raise ValueError("a bootstrap needs at least one non-empty group of values")
    rng = numpy.random.default_rng(seed)
    resampled = sum(g[rng.integers(0, len(g), size=(samples, len(g)))].mean(axis=1) for g in groups) / len(groups)
    return float(numpy.mean([g.mean() for g in groups])), numpy.sort(resampled)


def interval_index(samples: int) -> int:
    """Where the 95% interval starts among ``samples`` sorted bootstrap values (it ends at
    ``samples - 1 - index``): chosen so that the interval excludes 0 exactly when the two-sided p
    of :func:`paired_bootstrap` is below 0.05."""
    return max(0, math.ceil(0.025 * samples) - 1)


def bootstrap_interval(groups: Sequence[Sequence[float]], samples: int = 10_000, seed: int = 0):
    """(mean of the groups' means, 95% interval low, high), records resampled within each group."""
    point, means = stratified_means(groups, samples, seed)
    index = interval_index(samples)
    return point, float(means[index]), float(means[samples - 1 - index])


def paired_bootstrap(
    method: Sequence[float],
    baseline: Sequence[float],
    groups: Sequence[str] | None = None,
    samples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float, float]:
    """A method against a baseline on the same records: (the mean difference, its 95% interval low,
    high, the two-sided p that the difference is 0).

    With ``groups`` (each record's task) the difference is the mean over the tasks of their mean
    differences, and records are resampled within their task (Table 1's average of task means);
    without, the plain mean over records. p is twice the share of resampled differences on the far
    side of 0 (at most 1), so p < 0.05 exactly when the interval excludes 0.
    """
    if len(method) != len(baseline) or not method:
        raise ValueError("paired bootstrap needs two equally long, non-empty score lists")
    if groups is not None and len(groups) != len(method):
        raise ValueError("paired bootstrap needs one group name per record")
    diffs = [m - b for m, b in zip(method, baseline)]
    names = list(dict.fromkeys(groups)) if groups is not None else [None]
    by_group = [[d for d, g in zip(diffs, groups or [None] * len(diffs)) if g == name] for name in names]
    point, means = stratified_means(by_group, samples, seed)
    index = interval_index(samples)
    below, above = int((means <= 0).sum()), int((means >= 0).sum())
    p = min(1.0, 2 * min(below, above) / samples)
    return point, float(means[index]), float(means[samples - 1 - index]), p


def flat_judge(rows: Sequence[dict]) -> float | None:
    """The one score a judge gave every answer in ``rows`` (it told none apart: uninformative), or
    None when its scores vary (or there are none)."""
    values = {row["judge"] for row in rows if "judge" in row}
    return values.pop() if len(values) == 1 else None
