"""LongLaMP's metrics: ROUGE-1, ROUGE-L (rouge-score) and METEOR (nltk), per pair and per corpus.

The numbers match Hugging Face ``evaluate``'s ``rouge`` (``use_aggregator=False``, no stemmer, the
default tokenizer) and ``meteor`` (nltk's ``single_meteor_score`` on ``word_tokenize``d text,
alpha 0.9, beta 3, gamma 0.5, WordNet synonyms); a corpus score is the mean over pairs.

Offline, METEOR needs two pieces of NLTK data that ``evaluate`` downloads: WordNet (synonym
matching) and Punkt (sentence splitting before word tokenization). They are looked up in this
order and the variant that ran is reported in :attr:`LexicalMetrics.variant`:
- WordNet: NLTK's own data path (``nltk.download('wordnet')``), else Debian's ``wordnet-base``
  files (``/usr/share/wordnet``, or ``$RESTPG_WORDNET_DIR``), read by NLTK's WordNet reader; else
  no synonym matching at all, with a loud warning (exact and stem matches only: lower scores).
- Punkt: NLTK's data path, else a regular-expression sentence splitter (differs from Punkt only
  around abbreviations such as "Dr.").
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

from nltk.tokenize import word_tokenize
from nltk.translate.meteor_score import single_meteor_score
from rapidfuzz.distance import LCSseq
from rouge_score import rouge_scorer, scoring

log = logging.getLogger(__name__)

METRIC_NAMES = ("rouge1", "rougeL", "meteor")
DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")

# NLTK's WordNet reader needs the lexicographer-file list, which Debian's wordnet-base omits.
# It is fixed for WordNet 3.0: number, name, syntactic category.
_WORDNET_LEXNAMES = [
    "adj.all 3",
    "adj.pert 3",
    "adv.all 4",
    "noun.Tops 1",
    "noun.act 1",
    "noun.animal 1",
    "noun.artifact 1",
    "noun.attribute 1",
    "noun.body 1",
    "noun.cognition 1",
    "noun.communication 1",
    "noun.event 1",
    "noun.feeling 1",
    "noun.food 1",
    "noun.group 1",
    "noun.location 1",
    "noun.motive 1",
    "noun.object 1",
    "noun.person 1",
    "noun.phenomenon 1",
    "noun.plant 1",
    "noun.possession 1",
    "noun.process 1",
    "noun.quantity 1",
    "noun.relation 1",
    "noun.shape 1",
    "noun.state 1",
    "noun.substance 1",
    "noun.time 1",
    "verb.body 2",
    "verb.change 2",
    "verb.cognition 2",
    "verb.communication 2",
    "verb.competition 2",
    "verb.consumption 2",
    "verb.contact 2",
    "verb.creation 2",
    "verb.emotion 2",
    "verb.motion 2",
    "verb.perception 2",
    "verb.possession 2",
    "verb.social 2",
    "verb.stative 2",
    "verb.weather 2",
    "adj.ppl 3",
]
_WORDNET_FILES = (
    "data.adj",
    "data.adv",
    "data.noun",
    "data.verb",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
    "adj.exc",
    "adv.exc",
    "noun.exc",
    "verb.exc",
)


class _NoSynonyms:
    """Stands in for WordNet when none is installed: METEOR then matches exact words and stems."""

    def synsets(self, *args, **kwargs):
        return []


def _nltk_has(resource: str) -> bool:
    import nltk

    try:
        nltk.data.find(resource)
        return True
    except LookupError:
        return False


_DEBIAN_MARKER = "FROM_DEBIAN_WORDNET_BASE"


def _nltk_has_own_wordnet() -> bool:
    """NLTK's downloaded WordNet, not the copy of Debian's files that restpg adds to NLTK's path."""
    import nltk

    if _nltk_has("corpora/wordnet.zip"):
        return True
    if not _nltk_has("corpora/wordnet"):
        return False
    return not (Path(str(nltk.data.find("corpora/wordnet"))) / _DEBIAN_MARKER).exists()


def _debian_wordnet(cache_dir: Path) -> object | None:
    """NLTK's WordNet reader over Debian's wordnet-base files.

    NLTK reads corpora only below its data path, and its reader needs the lexicographer-file
    list that Debian omits: the files are copied once into ``<cache>/nltk_data/corpora/wordnet``
    (about 35 MB) with ``lexnames`` added, and that data folder is added to NLTK's path.
    """
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    source = Path(os.environ.get("RESTPG_WORDNET_DIR") or DEBIAN_WORDNET_DIR)
    if not all((source / name).exists() for name in _WORDNET_FILES):
        return None
    data_dir = cache_dir / "nltk_data"
    root = data_dir / "corpora" / "wordnet"
    if not (root / "lexnames").exists():
        staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=_ensure_dir(root.parent)))
        for name in _WORDNET_FILES:
            shutil.copyfile(source / name, staging / name)
        lines = [f"{i:02d}\t{entry.split()[0]}\t{entry.split()[1]}" for i, entry in enumerate(_WORDNET_LEXNAMES)]
        (staging / "lexnames").write_text("\n".join(lines) + "\n")
        (staging / _DEBIAN_MARKER).write_text(f"copied from {source} by restpg\n")
        try:
            os.replace(staging, root)
        except OSError:  # another process finished the copy first
            shutil.rmtree(staging, ignore_errors=True)
    if str(data_dir) not in nltk.data.path:
        nltk.data.path.append(str(data_dir))

    class DebianWordNet(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            # The sense-key map to another WordNet version serves only multilingual lookups
            # (not METEOR) and needs index.sense, which wordnet-base lacks.
            return None

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions are not available")
        return DebianWordNet(str(root), None)


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_wordnet(cache_dir: Path | None = None) -> tuple[object, str]:
    """(WordNet reader, description of where it came from)."""
    if _nltk_has_own_wordnet():
        from nltk.corpus import wordnet

        return wordnet, "wordnet (nltk data)"
    from ..inference.models import default_cache_dir

    reader = _debian_wordnet(cache_dir or default_cache_dir())
    if reader is not None:
        return reader, "wordnet 3.0 (debian wordnet-base)"
    message = (
        "METEOR runs WITHOUT WordNet synonyms (no nltk wordnet data, no /usr/share/wordnet): "
        "scores are lower than evaluate's. Install Debian's wordnet-base or run "
        "nltk.download('wordnet')."
    )
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    log.warning(message)
    return _NoSynonyms(), "NO synonyms (exact+stem only)"


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class LexicalMetrics:
    """ROUGE-1, ROUGE-L and METEOR scorer; build once, reuse (WordNet loading takes a moment)."""

    cache_dir: Path | None = None
    variant: str = field(init=False)

    def __post_init__(self) -> None:
        self._rouge = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
        self._wordnet, wordnet_source = load_wordnet(self.cache_dir)
        self._punkt = _nltk_has("tokenizers/punkt_tab/english/")
        splitter = "punkt" if self._punkt else "regex sentence split"
        self.variant = f"meteor: {wordnet_source}, {splitter}; rouge: rouge-score, no stemmer"

    def _tokens(self, text: str) -> list[str]:
        if self._punkt:
            return word_tokenize(text)
        return [
            token
            for sentence in _SENTENCE_END.split(text.strip())
            for token in word_tokenize(sentence, preserve_line=True)
        ]

    def rouge(self, prediction: str, reference: str) -> dict[str, float]:
        """ROUGE-1 and ROUGE-L F1 of one prediction against its reference.

        rouge-score's own tokenizer and formulas; only the longest common subsequence is computed
        by rapidfuzz (C++) instead of rouge-score's pure-Python table: the same numbers (tested
        against ``RougeScorer.score``), about 3x the pairs per second.
        """
        ref_tokens = self._rouge._tokenizer.tokenize(reference)
        pred_tokens = self._rouge._tokenizer.tokenize(prediction)
        rouge1 = rouge_scorer._score_ngrams(
            rouge_scorer._create_ngrams(ref_tokens, 1), rouge_scorer._create_ngrams(pred_tokens, 1)
        ).fmeasure
        if ref_tokens and pred_tokens:
            lcs = LCSseq.similarity(ref_tokens, pred_tokens)
            rouge_l = scoring.fmeasure(lcs / len(pred_tokens), lcs / len(ref_tokens))
        else:
            rouge_l = 0.0
        return {"rouge1": rouge1, "rougeL": rouge_l}

    def meteor(self, prediction: str, reference: str) -> float:
        return float(
            single_meteor_score(
                self._tokens(reference), self._tokens(prediction), alpha=0.9, beta=3, gamma=0.5, wordnet=self._wordnet
            )
        )

    def score(self, prediction: str, reference: str) -> dict[str, float]:
        """Scores of one prediction against its reference, each in [0, 1]."""
        return {**self.rouge(prediction, reference), "meteor": self.meteor(prediction, reference)}

    def score_pairs(self, predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        return [self.score(p, r) for p, r in zip(predictions, references)]

    def corpus(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        """Mean of each metric over the pairs (what LongLaMP's tables report)."""
        per_pair = self.score_pairs(predictions, references)
        if not per_pair:
            raise ValueError("no pairs to score")
        return {name: fmean(s[name] for s in per_pair) for name in METRIC_NAMES}


@dataclass(frozen=True)
class LexicalReward:
    """An EM reward from the lexical metrics: a weighted mean of them, in [0, 1].

    ``weights`` maps metric names (rouge1, rougeL, meteor) to weights, e.g. {"rougeL": 1.0} or
    {"rouge1": 0.5, "meteor": 0.5}. The reward is computed on the final answer only.
    """

    weights: dict[str, float] = field(default_factory=lambda: {"rougeL": 1.0})

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(METRIC_NAMES)
        if unknown:
            raise ValueError(f"unknown metric(s) {sorted(unknown)} in reward weights; known: {METRIC_NAMES}")
        if not self.weights or any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ValueError(f"reward weights must be non-negative with a positive sum, got {self.weights}")

    def __call__(self, scores: dict[str, float]) -> float:
        total = sum(self.weights.values())
        return sum(weight * scores[name] for name, weight in self.weights.items()) / total
