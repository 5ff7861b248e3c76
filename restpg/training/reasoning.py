"""Stage 1: the reasoning path of each training record (paper's Figure 7), from a teacher model or a file.

From a teacher (:func:`reasoning_paths`): the teacher sees the retrieved profile items (joined with "|"), the request and the user's real
output, and writes a bullet list on the user's style and preferences. The reasoning may not copy
the output: lines that share a long word sequence with it are dropped.

Results are cached in a JSONL file, one line per record, keyed by record id + teacher + prompt
version, appended (and flushed) after every batch: a rerun or a crash never redoes finished records.

From a file (:func:`reasoning_from_file`): precomputed paths keyed by record id, one JSON object per
line with ``record_id``, ``reasoning`` and ``teacher`` (who wrote it): what a researcher brings
from a 7B teacher run elsewhere, or the hand-written reference paths shipped with the sample
(``SAMPLE_REASONING_FILE``). The same copy check applies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.longlamp import SAMPLE_DIR, Record
from ..data.prompts import PROMPT_VERSION, PromptSettings, fit_prompt, teacher_prompt
from ..data.retrieval import PAPER_TOP_K, retrieve
from ..errors import RestpgError
from ..inference.models import GenerationSettings, LoadedModel, generate, prompt_token_counter
from ..jsonl import append_jsonl, read_jsonl

COPY_NGRAM = 8  # a reasoning line sharing this many consecutive words with the output is a copy
SAMPLE_REASONING_FILE = SAMPLE_DIR / "reasoning.jsonl"  # hand-written for every training record of the sample


class ReasoningFileError(RestpgError, ValueError):
    """A reasoning file that cannot be read, a bad row, or training records it does not cover."""


@dataclass(frozen=True)
class ReasoningSettings:
    k: int = PAPER_TOP_K
    # The paper does not give the teacher's decoding; greedy keeps the cache deterministic.
    generation: GenerationSettings = GenerationSettings(max_new_tokens=512, temperature=0.0)
    prompt: PromptSettings = PromptSettings()


@dataclass(frozen=True)
class ReasoningPath:
    record_id: str
    teacher: str
    reasoning: str  # empty when nothing usable was left
    dropped_copied_lines: int
    truncated: bool


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def drop_copied_lines(reasoning: str, output: str, n: int = COPY_NGRAM) -> tuple[str, int]:
    """Remove reasoning lines that share an n-word sequence with the output."""
    words = _words(output)
    grams = {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}
    kept, dropped = [], 0
    for line in reasoning.splitlines():
        line_words = _words(line)
        if any(tuple(line_words[i : i + n]) in grams for i in range(len(line_words) - n + 1)):
            dropped += 1
        else:
            kept.append(line)
    return "\n".join(kept).strip(), dropped


def cache_key(record_id: str, teacher: str) -> str:
    return f"{record_id}|{teacher}|prompt-v{PROMPT_VERSION}"


def read_cache(cache_file: Path) -> dict[str, ReasoningPath]:
    paths: dict[str, ReasoningPath] = {}
    for row in read_jsonl(cache_file):
        try:
            paths[row["key"]] = ReasoningPath(
                row["record_id"], row["teacher"], row["reasoning"], row["dropped_copied_lines"], row["truncated"]
            )
        except (KeyError, TypeError):
            continue
    return paths


def _teacher_prompt(record: Record, settings: ReasoningSettings, count_tokens: Callable[[str], int]) -> str:
    """Stage 1's prompt for ``record`` within the teacher's input budget (lowest-ranked items give way)."""

    def build(items, prompt_settings):
        return teacher_prompt(record.task, record.input, record.output, items, prompt_settings)

    return fit_prompt(
        build,
        [x.item for x in retrieve(record, settings.k)],
        settings.prompt,
        count_tokens,
        settings.generation.max_input_tokens,
        name=f"teacher prompt of record {record.record_id}",
    ).prompt


def reasoning_paths(
    teacher: LoadedModel,
    records: Sequence[Record],
    cache_file: Path,
    settings: ReasoningSettings = ReasoningSettings(),
    on_batch: Callable[[int], None] | None = None,
    cancel=None,
) -> dict[str, ReasoningPath]:
    """The reasoning path of every record (record_id -> path), generating only the missing ones."""
    cached = read_cache(cache_file)
    todo = [r for r in records if cache_key(r.record_id, teacher.name) not in cached]
    if on_batch is not None and len(records) > len(todo):
        on_batch(len(records) - len(todo))
    step = settings.generation.batch_size
    count_tokens = prompt_token_counter(teacher.tokenizer)
    for start in range(0, len(todo), step):
        batch = todo[start : start + step]
        prompts = [_teacher_prompt(r, settings, count_tokens) for r in batch]
        outputs = generate(teacher, prompts, settings.generation, cancel=cancel)
        rows = []
        for record, samples in zip(batch, outputs):
            text = samples[0].text
            if samples[0].truncated and "\n" in text.strip():
                text = text.strip().rsplit("\n", 1)[0]  # the last line was cut mid-sentence
            text, dropped = drop_copied_lines(text, record.output)
            path = ReasoningPath(record.record_id, teacher.name, text, dropped, samples[0].truncated)
            rows.append((cache_key(record.record_id, teacher.name), path))
        append_jsonl(cache_file, [{"key": key, **path.__dict__} for key, path in rows])
        cached.update(rows)
        if on_batch is not None:
            on_batch(len(batch))
    return {r.record_id: cached[cache_key(r.record_id, teacher.name)] for r in records}


def reasoning_from_file(path: Path, records: Sequence[Record], missing_ok: bool = False) -> dict[str, ReasoningPath]:
    """The reasoning path of every record from a JSONL file keyed by record id.

    A malformed line or row is an error naming the file and line; so is a training record the file
    does not cover (the first few are named), unless ``missing_ok`` (validation records: those
    covered are returned). Lines that copy the record's real output are dropped.
    """
    import json

    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ReasoningFileError(f"{path}: cannot read the reasoning file ({error.strerror or error})") from None
    rows: dict[str, dict] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ReasoningFileError(f"{path}: line {number}: not JSON ({error.msg})") from None
        for name in ("record_id", "reasoning", "teacher"):
            if not isinstance(row, dict) or not isinstance(row.get(name), str) or not row[name].strip():
                raise ReasoningFileError(f"{path}: line {number}: field {name!r} missing or not a non-empty string")
        rows[row["record_id"]] = row
    missing = [r.record_id for r in records if r.record_id not in rows]
    if missing and not missing_ok:
        raise ReasoningFileError(
            f"{path}: no reasoning path for {len(missing)} of {len(records)} training records "
            f"(e.g. {', '.join(missing[:3])}); pass --reasoning-from teacher, or a file "
            "that covers them"
        )
    paths = {}
    for record in (r for r in records if r.record_id in rows):
        row = rows[record.record_id]
        text, dropped = drop_copied_lines(row["reasoning"], record.output)
        paths[record.record_id] = ReasoningPath(record.record_id, row["teacher"], text, dropped, truncated=False)
    return paths


def file_teachers(path: Path) -> str:
    """Who wrote the paths in a reasoning file, for the run manifest and the page ("" when unreadable)."""
    from ..jsonl import read_jsonl

    names = sorted({row.get("teacher", "?") for row in read_jsonl(Path(path)) if isinstance(row, dict)})
    return ", ".join(names)
