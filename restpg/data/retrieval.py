"""Top-k profile items for a request, by BM25 (rank-bm25).

The paper retrieves k = 5 items with the dense retriever Contriever; Contriever's weights come
from the hub, which this project cannot assume, so BM25 (LongLaMP's own sparse baseline) is the
retriever here. The interface takes any scorer, so a dense one can be added beside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rank_bm25 import BM25Okapi

from .longlamp import TASKS, ProfileItem, Record, task_spec

PAPER_TOP_K = 5  # paper: k = 5 retrieved profile items

_WORD = re.compile(r"\w+", re.UNICODE)

# Fields that describe the user's document (retrieval text and prompt context), per task, in order.
ITEM_TEXT_FIELDS: dict[str, tuple[str, ...]] = {name: spec.text_fields for name, spec in TASKS.items()}


def item_text(task: str, item: ProfileItem) -> str:
    """The item's text fields joined by spaces (the LongLaMP authors' retrieval corpus text)."""
    task_spec(task)  # unknown task -> clear error
    values = (item.fields.get(name) for name in ITEM_TEXT_FIELDS[task])
    return " ".join(str(value) for value in values if value not in (None, ""))


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class RetrievedItem:
    position: int  # index of the item in the record's profile
    item_id: str
    score: float
    item: ProfileItem


def retrieve(record: Record, k: int = PAPER_TOP_K) -> list[RetrievedItem]:
    """The k profile items of ``record`` that BM25 scores highest against its request.

    Ties keep profile order, so the result is deterministic. A profile shorter than k is
    returned whole, ranked.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    corpus = [tokenize(item_text(record.task, item)) for item in record.profile]
    # BM25Okapi divides by the mean document length: an all-empty profile would divide by zero.
    if not any(corpus):
        scores = [0.0] * len(corpus)
    else:
        scores = list(BM25Okapi([doc or [""] for doc in corpus]).get_scores(tokenize(record.input)))
    order = sorted(range(len(corpus)), key=lambda i: (-scores[i], i))[:k]
    return [RetrievedItem(i, record.profile[i].item_id, float(scores[i]), record.profile[i]) for i in order]
