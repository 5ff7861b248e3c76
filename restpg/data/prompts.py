"""Prompt templates (paper's Figures 7 and 8, in our words) and parsing of the model's text.

Four prompts per task:
- ``teacher_prompt``: stage 1, a teacher sees the profile items, the request and the real output
  and writes the reasoning path (a bullet list on the user's style and preferences).
- ``personalized_prompt``: stages 2-3, the model first summarises the user's style from the
  retrieved items, then answers. Its target is :func:`reasoning_target`.
- ``rag_prompt``: baselines without reasoning (RAG, SFT, ReST-EM without reasoning).
- ``plain_prompt``: the non-personalized baseline (no profile at all).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from ..errors import RestpgError
from .longlamp import ProfileItem, task_spec
from .retrieval import ITEM_TEXT_FIELDS

log = logging.getLogger(__name__)

# Bump when any template below changes: caches of teacher reasoning are keyed on it.
PROMPT_VERSION = "2"  # 2: cut items keep their last words too

ITEM_SEPARATOR = " | "  # paper: profile documents joined with "|"
OPENING = "To summarize the user's writing style, consider these aspects:"
TRANSITION = "Now, considering the style summary, the final answer:"

# What the user's documents are called in each task, for the wording of the prompts.
DOCUMENT_NOUN = {
    "product_review": "product reviews",
    "abstract_generation": "paper abstracts",
    "topic_writing": "posts",
    "email_completion": "emails",
}

# Readable labels for the item fields shown in the context.
FIELD_LABELS = {
    "overall": "rating",
    "summary": "summary",
    "description": "product",
    "reviewText": "review",
    "title": "title",
    "abstract": "abstract",
    "content": "post",
    "text": "text",
}


@dataclass(frozen=True)
class PromptSettings:
    # Paper: inputs up to 5,120 tokens, so items go in whole (None). CPU-forced: the cpu-small
    # preset cuts each item's long fields to a word budget to keep prompts short.
    max_item_words: int | None = None


class PromptTooLongError(RestpgError, ValueError):
    """A prompt longer than the model's input budget even without its profile items."""


TAIL_SHARE = 1 / 3  # of a cut field's word budget, spent on its last words


def _clip_words(text: str, limit: int | None) -> str:
    """``text`` within ``limit`` words: its first two thirds of the budget, " ... ", and its last
    third. Openings and sign-offs carry much of a writer's style, so both ends are kept."""
    if limit is None:
        return text
    words = text.split()
    if len(words) <= limit:
        return text
    tail = int(limit * TAIL_SHARE)
    head = limit - tail
    return (
        " ".join(words[:head]) + " ... " + " ".join(words[len(words) - tail :])
        if tail
        else " ".join(words[:head]) + " ..."
    )


def format_item(task: str, item: ProfileItem, settings: PromptSettings = PromptSettings()) -> str:
    task_spec(task)
    parts = []
    for name in ITEM_TEXT_FIELDS[task]:
        value = item.fields.get(name)
        if value in (None, ""):
            continue
        text = _clip_words(" ".join(str(value).split()), settings.max_item_words)
        parts.append(f"{FIELD_LABELS.get(name, name)}: {text}")
    return ", ".join(parts)


def format_context(task: str, items: Sequence[ProfileItem], settings: PromptSettings = PromptSettings()) -> str:
    return ITEM_SEPARATOR.join(format_item(task, item, settings) for item in items)


def teacher_prompt(
    task: str,
    request: str,
    expected_output: str,
    items: Sequence[ProfileItem],
    settings: PromptSettings = PromptSettings(),
) -> str:
    """Stage 1 (paper's Figure 7): ask for the reasoning path that links profile and output."""
    noun = DOCUMENT_NOUN[task]
    return (
        "You are a professional writing assistant. Below are past documents written by one user "
        f"({noun}), separated by '|', a subject, and the output the user wrote for that subject. "
        "Summarize the user's writing style and preferences as they show in the past documents, "
        "as far as they matter for writing the expected output: their interests and preferences, "
        "how familiar they are with the topics, their favourite words and phrases, and their "
        "grammar and sentence structure. Reasonable guesses are allowed (a user interested in one "
        "topic is likely interested in a related one). Only describe what the past documents show: "
        "use the expected output only to decide which features matter, and never copy it or "
        "mention it directly. Answer with a list of bullet points, each with a short explanation.\n"
        f"past documents: {format_context(task, items, settings)}\n"
        f"subject: {request}\n"
        f"expected output: {expected_output}\n"
        "summary of the user's writing style and preferences:"
    )


_PERSONALIZED_PREAMBLE = (
    "The following context is written by a specific user. Use it to write a personalized response "
    "to the instruction: the response must follow this user's preferences and writing style as "
    "they show in the context."
)


def personalized_prompt(
    task: str, request: str, items: Sequence[ProfileItem], settings: PromptSettings = PromptSettings()
) -> str:
    """Stages 2-3 (paper's Figure 8): reason about the user's style first, then answer."""
    task_spec(task)
    return (
        f"{_PERSONALIZED_PREAMBLE} First summarize the user's writing style from the context. "
        "Then use that summary to write the response to the instruction.\n"
        f"instruction: {request}\n"
        f"context: {format_context(task, items, settings)}\n"
        "answer:"
    )


def rag_prompt(
    task: str, request: str, items: Sequence[ProfileItem], settings: PromptSettings = PromptSettings()
) -> str:
    """Retrieval-augmented prompt without reasoning (RAG, SFT and ReST-EM baselines)."""
    task_spec(task)
    return (
        f"{_PERSONALIZED_PREAMBLE}\ninstruction: {request}\ncontext: {format_context(task, items, settings)}\nanswer:"
    )


def plain_prompt(task: str, request: str) -> str:
    """Non-personalized baseline: the request alone."""
    task_spec(task)
    return f"instruction: {request}\nanswer:"


def reasoning_target(reasoning: str, output: str) -> str:
    """The stage-2 training target: opening phrase, reasoning, transition phrase, answer."""
    return f"{OPENING}\n{reasoning.strip()}\n{TRANSITION}\n{output.strip()}"


# ----------------------------------------------------------------------------------------------
# Parsing the model's text into reasoning and response


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    """Match a fixed phrase case-insensitively, with any whitespace and an optional trailing colon."""
    words = phrase.rstrip(":").split()
    return re.compile(r"\s+".join(re.escape(w) for w in words) + r"\s*:?", re.IGNORECASE)


_OPENING_RE = _phrase_pattern(OPENING)
_TRANSITION_RE = _phrase_pattern(TRANSITION)
_LOOSE_TRANSITION_RE = re.compile(r"final\s+answer\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedOutput:
    reasoning: str
    response: str
    found_transition: bool
    truncated: bool
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.found_transition and bool(self.reasoning) and bool(self.response)


def parse_output(text: str, truncated: bool = False) -> ParsedOutput:
    """Split generated text into (reasoning, response); never raises.

    - Opening and transition phrases found: reasoning between them, response after.
    - A looser "final answer:" is accepted as the transition when the exact phrase is missing.
    - No transition and the text was cut at the token limit: everything is (unfinished)
      reasoning and the response is empty.
    - No transition and the model stopped by itself: the model skipped the reasoning, so the
      whole text is the response.
    """
    problems: list[str] = []
    body = text.strip()
    opening = _OPENING_RE.search(body)
    if opening and opening.start() <= 5:
        body = body[opening.end() :].strip()
    transition = _TRANSITION_RE.search(body) or _LOOSE_TRANSITION_RE.search(body)
    if transition is not None:
        reasoning, response = body[: transition.start()].strip(), body[transition.end() :].strip()
        found = True
    elif truncated:
        reasoning, response, found = body, "", False
        problems.append("output was cut at the token limit before the final answer")
    else:
        reasoning, response, found = "", body, False
        problems.append("no transition phrase: the model wrote no separate reasoning")
    if found and not reasoning:
        problems.append("empty reasoning")
    if found and not response:
        problems.append("empty response" + (" (cut at the token limit)" if truncated else ""))
    return ParsedOutput(reasoning, response, found, truncated, tuple(problems))


# ----------------------------------------------------------------------------------------------
# One entry point for the three kinds of generation prompt

PROMPT_KINDS = ("plain", "rag", "reasoning")


def build_prompt(
    kind: str, task: str, request: str, items: Sequence[ProfileItem], settings: PromptSettings = PromptSettings()
) -> str:
    """plain: no profile; rag: retrieved items, answer directly; reasoning: reason first (REST-PG)."""
    if kind == "plain":
        return plain_prompt(task, request)
    if kind == "rag":
        return rag_prompt(task, request, items, settings)
    if kind == "reasoning":
        return personalized_prompt(task, request, items, settings)
    raise ValueError(f"unknown prompt kind {kind!r}; known: {', '.join(PROMPT_KINDS)}")


def answer_of(kind: str, text: str, truncated: bool) -> ParsedOutput:
    """The parsed output of a generation: reasoning prompts are split, the others are all answer."""
    if kind == "reasoning":
        return parse_output(text, truncated)
    problems = ("output was cut at the token limit",) if truncated else ()
    return ParsedOutput("", text.strip(), False, truncated, problems)


# ----------------------------------------------------------------------------------------------
# One rule for prompts over the input budget, in training and in sampling alike


@dataclass(frozen=True)
class FittedPrompt:
    prompt: str
    items: tuple  # the items in the prompt: the given ones, best first, less any dropped
    dropped: int = 0  # items dropped (lowest-ranked first) to fit the budget
    item_words: int | None = None  # a word budget the last kept item was shortened to, if any

    @property
    def changed(self) -> bool:
        return bool(self.dropped) or self.item_words is not None


def fit_prompt(
    build: Callable[[Sequence, PromptSettings], str],
    items: Sequence,
    settings: PromptSettings,
    count_tokens: Callable[[str], int],
    budget: int,
    name: str = "prompt",
) -> FittedPrompt:
    """The prompt ``build(items, settings)`` within ``budget`` tokens (as ``count_tokens`` counts them).

    Only the retrieved profile items give way, never the instruction, the request or the chat
    header: the lowest-ranked items are dropped first; if the best item alone is still too long,
    its fields are shortened (halving their word budget) and at last dropped too. A request that
    does not fit even without any item is a :class:`PromptTooLongError` naming ``name``. Training
    and sampling both build their prompts through this, so a model reads the prompt it learned on.
    """
    items = tuple(items)
    prompt = build(items, settings)
    if count_tokens(prompt) <= budget:
        return FittedPrompt(prompt, items)
    kept = items
    while len(kept) > 1:
        kept = kept[:-1]
        prompt = build(kept, settings)
        if count_tokens(prompt) <= budget:
            return _said(FittedPrompt(prompt, kept, len(items) - len(kept)), name, budget)
    words = settings.max_item_words or 4096
    while kept and words > 4:
        words //= 2
        shortened = replace(settings, max_item_words=words)
        prompt = build(kept, shortened)
        if count_tokens(prompt) <= budget:
            return _said(FittedPrompt(prompt, kept, len(items) - len(kept), words), name, budget)
    prompt = build((), settings)
    length = count_tokens(prompt)
    if length > budget:
        raise PromptTooLongError(
            f"{name}: {length} tokens without any profile item; the limit is {budget} "
            "(the request itself is too long: shorten it or raise the input limit)"
        )
    return _said(FittedPrompt(prompt, (), len(items)), name, budget)


def _said(fitted: FittedPrompt, name: str, budget: int) -> FittedPrompt:
    shortened = f", the last kept one cut to {fitted.item_words} words per field" if fitted.item_words else ""
    log.warning(
        "%s: over %d tokens, so %d of %d retrieved profile item(s) dropped%s",
        name,
        budget,
        fitted.dropped,
        fitted.dropped + len(fitted.items),
        shortened,
    )
    return fitted


def fitted_prompt(
    kind: str,
    task: str,
    request: str,
    items: Sequence[ProfileItem],
    settings: PromptSettings,
    count_tokens: Callable[[str], int] | None,
    budget: int | None,
    name: str = "prompt",
) -> FittedPrompt:
    """:func:`build_prompt` of ``kind`` within ``budget`` tokens (no budget: the whole prompt)."""

    def build(kept, shown_settings):
        return build_prompt(kind, task, request, kept, shown_settings)

    items = tuple(items) if kind != "plain" else ()
    if count_tokens is None or budget is None:
        return FittedPrompt(build(items, settings), items)
    return fit_prompt(build, items, settings, count_tokens, budget, name)
