"""Rewards for EM: the paper's LLM judge and LongLaMP's lexical metrics, on the final answer only.

The judge (paper's Appendix A, Figure 6): any causal LM is shown a five-level rubric, the
instruction, the ground truth and the answer, and the score is the rubric level to which it
assigns the highest probability as its next output (no sampling), divided by 10; so the reward
lies in {0.1, 0.3, 0.5, 0.7, 1.0}. Levels whose text spans several tokens ("10" is "1", "0" for
many tokenizers) are scored by the probability of their whole token sequence, and a level that is
a prefix of another ("1" of "10") by the probability that it ends there.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from ..inference.models import LoadedModel, chat_text
from ..inference.shared_prefix import Root, last_logits, root_of
from ..jsonl import append_jsonl, read_jsonl
from .metrics import LexicalMetrics, LexicalReward

JUDGE_PROMPT_VERSION = "1"
JUDGE_LEVELS = (1, 3, 5, 7, 10)  # paper's rubric levels; reward = level / 10
PAPER_JUDGE_TAU = 1.0  # paper: keep only outputs the judge gives its top score


def judge_prompt(instruction: str, ground_truth: str, answer: str) -> str:
    """The paper's rubric prompt (Figure 6), in our words."""
    return (
        "You are an impartial judge. Rate how well the assistant's answer matches the ground-truth "
        "answer for the user's instruction, using this rubric:\n"
        "1: the answer is unrelated to the ground truth.\n"
        "3: the answer has minor relevance to the ground truth but does not align with it.\n"
        "5: the answer has moderate relevance to the ground truth but contains inaccuracies.\n"
        "7: the answer aligns with the ground truth with minor omissions.\n"
        "10: the answer is completely accurate and aligns perfectly with the ground truth.\n"
        f"instruction: {instruction}\n"
        f"ground truth: {ground_truth}\n"
        f"answer: {answer}\n"
        "Reply with the score only (1, 3, 5, 7 or 10)."
    )


class Reward(Protocol):
    """Scores answers against the user's real text; every reward lies in [0, 1]."""

    name: str

    def __call__(
        self, instructions: Sequence[str], references: Sequence[str], answers: Sequence[str]
    ) -> list[float]: ...


@dataclass(frozen=True)
class JudgeScore:
    level: int
    probabilities: dict[int, float]  # normalised over the five levels

    @property
    def reward(self) -> float:
        return self.level / 10


class _LevelTokens:
    """Token sequences of the rubric levels and which level extends which."""

    def __init__(self, tokenizer, levels: Sequence[int]):
        self.levels = tuple(levels)
        self.tokens = {level: tuple(tokenizer.encode(str(level), add_special_tokens=False)) for level in levels}
        if len(set(self.tokens.values())) != len(self.levels):
            raise ValueError(f"judge levels tokenize ambiguously: {self.tokens}")
        # Sequences to run: the levels that no other level extends (the others are read inside them).
        self.leaves = [
            lv
            for lv in levels
            if not any(o != lv and self.tokens[o][: len(self.tokens[lv])] == self.tokens[lv] for o in levels)
        ]
        # One forward pass per prompt and multi-token leaf: a single-token level is read from the
        # first position of any row, since every row shares the prompt up to there.
        self.rows = [lv for lv in self.leaves if len(self.tokens[lv]) > 1] or [self.leaves[0]]


@dataclass
class LLMJudge:
    """The paper's LLM-judge reward. Batched; each pair's score is cached (memory + optional JSONL)."""

    loaded: LoadedModel
    batch_size: int = 8
    cache_file: Path | None = None
    max_input_tokens: int = 4096
    # Shared prefixes run once (restpg.inference.shared_prefix); False: every prompt runs whole. None: shared
    # on a CPU (2.0-2.4x the pairs/s), whole on CUDA, where whole prompts in one batch measured
    # faster (H200, bf16: 269 against 146 pairs/s one answer per request, 441 against 292 with
    # 32 answers per request; bench/gpu_check.sh). bench/bench.py --only judge compares the two.
    share_prefixes: bool | None = None
    name: str = field(init=False)
    _cache: dict[str, JudgeScore] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        if self.share_prefixes is None:
            self.share_prefixes = self.loaded.device.type == "cpu"
        self.name = f"judge:{self.loaded.name}"
        self._levels = _LevelTokens(self.loaded.tokenizer, JUDGE_LEVELS)
        for row in read_jsonl(self.cache_file) if self.cache_file is not None else []:
            try:
                self._cache[row["key"]] = JudgeScore(row["level"], {int(k): v for k, v in row["p"].items()})
            except (KeyError, TypeError, AttributeError):
                continue

    def _key(self, instruction: str, reference: str, answer: str) -> str:
        text = "\x00".join(
            [self.loaded.name, str(self.loaded.active_adapter), JUDGE_PROMPT_VERSION, instruction, reference, answer]
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def score(
        self,
        instructions: Sequence[str],
        references: Sequence[str],
        answers: Sequence[str],
        on_batch: Callable[[int], None] | None = None,
    ) -> list[JudgeScore]:
        """Scores each pair (cached ones from the cache). Pairs with the same instruction and ground
        truth (an E-step request's m answers) go together, so their shared prompt runs once."""
        if not len(instructions) == len(references) == len(answers):
            raise ValueError("instructions, references and answers differ in length")
        keys = [self._key(i, r, a) for i, r, a in zip(instructions, references, answers)]
        first: dict[str, int] = {}
        for n, key in enumerate(keys):
            if key not in self._cache:
                first.setdefault(key, n)
        groups: dict[tuple[str, str], list[int]] = {}
        for n in first.values():
            groups.setdefault((instructions[n], references[n]), []).append(n)
        # batched by the length of what runs padded together (less padding): a group of answers by
        # its shared part's (its answers run after it, padded among themselves), a lone answer by its
        # whole prompt's (it runs in one piece); answers within a group by their own length
        ordered = sorted(
            groups.items(),
            key=lambda item: len(item[0][0]) + len(item[0][1]) + (len(answers[item[1][0]]) if len(item[1]) == 1 else 0),
        )
        todo = [n for _, group in ordered for n in sorted(group, key=lambda n: len(answers[n]))]
        if todo:
            prompts = [judge_prompt(instructions[n], references[n], answers[n]) for n in todo]
            for batch, scores in self._score_prompts(prompts, [(instructions[n], references[n]) for n in todo]):
                with self._lock:
                    for m, score in zip(batch, scores):
                        self._cache[keys[todo[m]]] = score
                    self._append_cache([(keys[todo[m]], s) for m, s in zip(batch, scores)])
                if on_batch is not None:
                    on_batch(len(batch))
        return [self._cache[key] for key in keys]

    def __call__(self, instructions: Sequence[str], references: Sequence[str], answers: Sequence[str]) -> list[float]:
        return [s.reward for s in self.score(instructions, references, answers)]

    def cut(self, instructions: Sequence[str], references: Sequence[str], answers: Sequence[str]) -> list[bool]:
        """Whether each pair's prompt is longer than the judge's ``max_input_tokens`` window, so that
        its middle is cut before scoring (counted in the run's reports)."""
        tokenizer = self.loaded.tokenizer
        return [
            len(tokenizer(chat_text(tokenizer, judge_prompt(i, r, a)), add_special_tokens=False)["input_ids"])
            > self.max_input_tokens
            for i, r, a in zip(instructions, references, answers)
        ]

    def _append_cache(self, rows: list[tuple[str, JudgeScore]]) -> None:
        if self.cache_file is not None:
            append_jsonl(self.cache_file, [{"key": key, "level": s.level, "p": s.probabilities} for key, s in rows])

    def _score_prompts(
        self, prompts: list[str], groups: Sequence[object] | None = None
    ) -> Iterator[tuple[list[int], list[JudgeScore]]]:
        """Yields (prompt indices, their scores) a batch at a time. Each prompt is one row per leaf
        level, its level tokens read by teacher forcing; the prefix all rows share (the rubric) runs
        once, and consecutive prompts of one group (``groups``: a label per prompt; one request's
        instruction and ground truth) run what they share once per batch (restpg.inference.shared_prefix)."""
        groups = list(range(len(prompts))) if groups is None else groups
        tokenizer = self.loaded.tokenizer
        levels = self._levels
        contexts = [tokenizer(chat_text(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]
        for n, ids in enumerate(contexts):
            if len(ids) > self.max_input_tokens:  # keep the instruction's end: cut the middle of the pair
                contexts[n] = ids[: self.max_input_tokens // 2] + ids[-self.max_input_tokens // 2 :]
        # Only the last positions are read (a level's tokens and the one after): the vocabulary
        # projection and its log-softmax run there alone, not over the whole prompt (a 256k
        # vocabulary times thousands of positions otherwise).
        keep = max(len(levels.tokens[leaf]) for leaf in levels.rows) + 1
        rows = [ids + list(levels.tokens[leaf]) for ids in contexts for leaf in levels.rows]
        per_prompt = len(levels.rows)
        labels = [group for group in groups for _ in levels.rows]
        with torch.inference_mode():  # entered per model call: never left on across a yield
            root = root_of(self.loaded.model, rows, keep, self.loaded.device) if self.share_prefixes else Root([], [])
        for start in range(0, len(prompts), self.batch_size):
            batch = list(range(start, min(start + self.batch_size, len(prompts))))
            with torch.inference_mode():
                logits = last_logits(
                    self.loaded.model,
                    rows[start * per_prompt : (batch[-1] + 1) * per_prompt],
                    labels[start * per_prompt : (batch[-1] + 1) * per_prompt],
                    keep,
                    tokenizer.pad_token_id,
                    root,
                    self.loaded.device,
                )
                logprobs = torch.log_softmax(logits.float(), dim=-1)
            yield batch, self._read_levels(logprobs, per_prompt, keep)

    def _read_levels(self, logprobs: torch.Tensor, per_prompt: int, keep: int) -> list[JudgeScore]:
        """Each prompt's level distribution from the log-probabilities at its rows' last ``keep``
        positions (a level's tokens read in a row that holds all of them; a single-token level
        without extensions in any row, from the position after the prompt)."""
        levels = self._levels
        log_p: list[dict[int, float]] = [{} for _ in range(len(logprobs) // per_prompt)]
        for row in range(len(logprobs)):
            n, leaf = row // per_prompt, levels.rows[row % per_prompt]
            leaf_tokens = levels.tokens[leaf]
            start = keep - len(leaf_tokens) - 1  # column whose logits predict the first level token
            for level in levels.levels:
                tokens = levels.tokens[level]
                # extensions: next tokens of the levels that extend this one ("0" after "1")
                extensions = {
                    levels.tokens[o][len(tokens)]
                    for o in levels.levels
                    if len(levels.tokens[o]) > len(tokens) and levels.tokens[o][: len(tokens)] == tokens
                }
                inside_row = leaf_tokens[: len(tokens)] == tokens  # every token of the level is in this row
                if level in log_p[n] or not (inside_row or (len(tokens) == 1 and not extensions)):
                    continue
                value = sum(float(logprobs[row, start + i, t]) for i, t in enumerate(tokens))
                if extensions:  # a level that others extend ("1" of "10") must also end here
                    cont = sum(math.exp(float(logprobs[row, start + len(tokens), t])) for t in extensions)
                    value += math.log(max(1.0 - cont, 1e-12))
                log_p[n][level] = value
        scores = []
        for values in log_p:
            top = max(values.values())
            weights = {lv: math.exp(v - top) for lv, v in values.items()}
            total = sum(weights.values())
            probabilities = {lv: w / total for lv, w in weights.items()}
            scores.append(JudgeScore(max(probabilities, key=probabilities.get), probabilities))
        return scores


@dataclass
class LexicalRewardModel:
    """LongLaMP's lexical metrics as an EM reward (weighted mean of ROUGE-1, ROUGE-L, METEOR)."""

    metrics: LexicalMetrics
    weights: LexicalReward = field(default_factory=LexicalReward)
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = "lexical:" + "+".join(f"{w:g}*{m}" for m, w in self.weights.weights.items())

    def __call__(self, instructions: Sequence[str], references: Sequence[str], answers: Sequence[str]) -> list[float]:
        return [self.weights(self.metrics.score(a, r)) if a.strip() else 0.0 for a, r in zip(answers, references)]
