"""Which retrieved profile items each sentence of a reasoning path drew on, for the rater.

A reasoning path should summarise the user's profile, so each of its sentences is linked to the
retrieved items that share its content words, with a score the rater can check by eye: shared
content words / the sentence's content words. A sentence no item supports is marked; that means
"no lexical evidence", not "false" (a claim about style may be true and share no words). Words of
the request itself ("review", "product") are no evidence and never count. The model never saw the
user's real text, so a reasoning path that repeats it is suspect: that is pre-flagged as a
*suggestion* for the rater's "copies the expected output" flag, with the longest shared phrase.

Plain lexical overlap, not BM25: BM25 scores are unbounded and their IDF over five retrieved
items is noise, so they do not explain themselves. The output of :func:`format_report` is plain
text for a textbox; data only ever goes into that string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nltk.stem import PorterStemmer

from ..errors import InputError
from .longlamp import Record
from .retrieval import item_text

# NLTK's English stopword list (apostrophe-free entries; tokens are ``\w+`` so "don't" is "don",
# "t"), built in so scores do not depend on whether the NLTK corpus was downloaded on this machine.
STOPWORDS = frozenset(
    """i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she
    her hers herself it its itself they them their theirs themselves what which who whom this that
    these those am is are was were be been being have has had having do does did doing a an the and
    but if or because as until while of at by for with about against between into through during
    before after above below to from up down in out on off over under again further then once here
    there when where why how all any both each few more most other some such no nor not only own same
    so than too very s t can will just don should now d ll m o re ve y ain aren couldn didn doesn
    hadn hasn haven isn ma mightn mustn needn shan shouldn wasn weren won wouldn""".split()
)
# Every reasoning sentence is about "the user"; the word is never evidence from an item.
REASONING_WORDS = frozenset({"user", "users"})

_WORD = re.compile(r"\w+", re.UNICODE)
_BULLET = r"(?:[-*\u2022+\u2013]|\d{1,2}[.)]|\(\d{1,2}\))"
_LEADING_BULLET = re.compile(rf"^\s*{_BULLET}\s+")
# A bullet run together with the previous sentence: "- a. - b." splits before the second "-".
_INLINE_BULLET = re.compile(rf"(?<=[.!?:;])\s+(?={_BULLET}\s)")
# Sentence end: punctuation (and closing quotes/brackets) followed by whitespace; "4.5" never splits.
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]\u201d\u2019]*\s+")
_ABBREVIATIONS = frozenset({"e.g", "i.e", "etc", "vs", "mr", "mrs", "ms", "dr", "st", "approx", "cf"})

_STEMMER = PorterStemmer()  # stateless once built: "praises"/"praised" -> "prais"
FORMAT_PHRASE_CHARS = 200  # longest copied phrase format_report shows whole


@dataclass(frozen=True)
class SupportConfig:
    """Thresholds for support and for the copy suggestion."""

    # Two shared content words: one word ("shoes") co-occurs by chance; two rarely do.
    min_shared_words: int = 2
    # A quarter of the sentence's content words: long sentences need more than two shared words.
    min_score: float = 0.25
    # Eight identical words in a row almost never happen by chance between two texts.
    copy_ngram: int = 8
    # Share of the reasoning's distinct word 4-grams found in the real text; a summary of the
    # profile shares a few percent by chance, and 35% keeps one common 5-6 word phrase in a short
    # reasoning from tripping it while stitched-together quotes still do.
    copy_overlap_threshold: float = 0.35
    overlap_n: int = 4

    def __post_init__(self) -> None:
        for name in ("min_shared_words", "copy_ngram", "overlap_n"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be an integer of at least 1, got {value!r}")
        for name in ("min_score", "copy_overlap_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise InputError(f"{name} must be a number from 0 to 1, got {value!r}")


@dataclass(frozen=True)
class ItemSupport:
    item_id: str
    score: float  # shared content words / the sentence's content words, in [0, 1]
    shared: tuple[str, ...]  # the shared content words, as written in the sentence


@dataclass(frozen=True)
class SentenceSupport:
    sentence: str
    items: tuple[ItemSupport, ...]  # the supporting items, best first

    @property
    def supported(self) -> bool:
        return bool(self.items)


@dataclass(frozen=True)
class SupportReport:
    sentences: tuple[SentenceSupport, ...]
    copy_overlap: float  # share of the reasoning's word n-grams found in the real text
    suggest_copy: bool
    copied_phrase: str  # longest phrase shared with the real text, as written in the reasoning
    overlap_n: int = 4

    @property
    def supported(self) -> int:
        return sum(s.supported for s in self.sentences)

    @property
    def unsupported(self) -> int:
        return len(self.sentences) - self.supported

    @property
    def copied_words(self) -> int:
        return len(_WORD.findall(self.copied_phrase))


def split_sentences(reasoning: str) -> list[str]:
    """The sentences of a reasoning path: bullets and sentence ends split, markers stripped."""
    _check_str("reasoning", reasoning)
    sentences = []
    for line in reasoning.splitlines():
        for chunk in _INLINE_BULLET.split(line):
            chunk = _LEADING_BULLET.sub("", chunk)
            for piece in _split_prose(chunk):
                piece = _LEADING_BULLET.sub("", piece).strip()
                if _WORD.search(piece):
                    sentences.append(piece)
    return sentences


def _split_prose(text: str) -> list[str]:
    pieces, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        before = text[start : end.start()].split()
        last = before[-1].lower().rstrip(".") if before else ""
        if last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha()):  # "e.g. x", "J. K. Rowling"
            continue
        pieces.append(text[start : end.end()])
        start = end.end()
    pieces.append(text[start:])
    return pieces


def _content_words(text: str) -> dict[str, str]:
    """Content words of ``text``: stem -> first surface form, in order of appearance."""
    words: dict[str, str] = {}
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS or word in REASONING_WORDS or word.isdigit():
            continue
        words.setdefault(_STEMMER.stem(word), word)
    return words


def support_report(
    reasoning: str,
    items: Sequence[tuple[str, str]],
    reference: str,
    config: SupportConfig = SupportConfig(),
    request: str = "",
) -> SupportReport:
    """Link each sentence of ``reasoning`` to the (item_id, text) ``items`` that support it and
    check it against the user's real text ``reference``; ``request`` words are no evidence."""
    _check_str("reference", reference)
    _check_str("request", request)
    if not isinstance(config, SupportConfig):
        raise InputError(f"config must be a SupportConfig, got {type(config).__name__}")
    pairs = _check_items(items)
    generic = set(_content_words(request))
    item_words = [(item_id, set(_content_words(text)) - generic) for item_id, text in pairs]
    sentences = []
    for sentence in split_sentences(reasoning):
        words = {stem: w for stem, w in _content_words(sentence).items() if stem not in generic}
        sentences.append(SentenceSupport(sentence, _supporting(words, item_words, config)))
    overlap, phrase = _copy_check(reasoning, reference, config.overlap_n)
    suggest = len(_WORD.findall(phrase)) >= config.copy_ngram or (
        overlap > 0 and overlap >= config.copy_overlap_threshold
    )
    return SupportReport(tuple(sentences), overlap, suggest, phrase, config.overlap_n)


def _supporting(
    words: dict[str, str], item_words: list[tuple[str, set[str]]], config: SupportConfig
) -> tuple[ItemSupport, ...]:
    found = []
    for position, (item_id, stems) in enumerate(item_words):
        shared = tuple(w for stem, w in words.items() if stem in stems)
        score = len(shared) / len(words) if words else 0.0
        if len(shared) >= config.min_shared_words and score >= config.min_score:
            found.append((-score, -len(shared), position, ItemSupport(item_id, score, shared)))
    return tuple(support for *_, support in sorted(found, key=lambda f: f[:3]))


def _copy_check(reasoning: str, reference: str, n: int) -> tuple[float, str]:
    """Share of the reasoning's distinct word n-grams in ``reference``, and the longest shared phrase."""
    spans = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(reasoning)]
    tokens = [t for *_, t in spans]
    ref = _WORD.findall(reference.lower())
    grams = {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}
    ref_grams = {tuple(ref[i : i + n]) for i in range(len(ref) - n + 1)}
    overlap = len(grams & ref_grams) / len(grams) if grams else 0.0
    # Longest common run of tokens; only matching pairs are visited.
    positions: dict[str, list[int]] = {}
    for j, token in enumerate(ref):
        positions.setdefault(token, []).append(j)
    best_len, best_end, previous = 0, 0, {}
    for i, token in enumerate(tokens):
        current = {j: previous.get(j - 1, 0) + 1 for j in positions.get(token, ())}
        for length in current.values():
            if length > best_len:
                best_len, best_end = length, i
        previous = current
    phrase = reasoning[spans[best_end - best_len + 1][0] : spans[best_end][1]] if best_len else ""
    return overlap, phrase


def report_for_record(
    reasoning: str,
    record: Record,
    retrieved_ids: Iterable[str],
    reference: str | None = None,
    config: SupportConfig = SupportConfig(),
) -> SupportReport:
    """:func:`support_report` over the ``record.profile`` items named in ``retrieved_ids`` (unknown
    ids ignored), with the record's request as generic words and its output as default reference."""
    if isinstance(retrieved_ids, (str, bytes)) or not isinstance(retrieved_ids, Iterable):
        raise InputError(f"retrieved_ids must be a list of item ids, got {retrieved_ids!r}"[:200])
    by_id = {item.item_id: item for item in record.profile}
    items, seen = [], set()
    for item_id in retrieved_ids:
        item_id = str(item_id)
        if item_id in by_id and item_id not in seen:
            seen.add(item_id)
            items.append((item_id, item_text(record.task, by_id[item_id])))
    return support_report(reasoning, items, record.output if reference is None else reference, config, record.input)


LEGEND = (
    "[+] supported: retrieved items sharing its content words (score = shared words / the sentence's "
    "content words); [?] no retrieved item supports it; [!] may copy the user's real text"
)


def format_report(report: SupportReport) -> str:
    """The report as plain text for a textbox: a legend, one line per sentence, totals, copy check."""
    lines = [LEGEND, ""]
    for s in report.sentences:
        if s.supported:
            links = ", ".join(f"item {i.item_id} ({i.score:.2f}: {', '.join(i.shared)})" for i in s.items)
            lines.append(f"[+] {s.sentence}   <- {links}")
        else:
            lines.append(f"[?] {s.sentence}   <- nothing in the retrieved profile supports this")
    if not report.sentences:
        lines.append("(empty reasoning: no sentences)")
    lines.append("")
    lines.append(f"{report.supported} of {len(report.sentences)} sentences supported by the retrieved items.")
    check = (
        f"copy check: {report.copy_overlap:.0%} of the reasoning's {report.overlap_n}-grams are in the user's real text"
    )
    if report.copied_phrase:
        phrase = report.copied_phrase
        if len(phrase) > FORMAT_PHRASE_CHARS:
            phrase = phrase[: FORMAT_PHRASE_CHARS - 3] + "..."
        check += f'; longest shared phrase ({report.copied_words} words): "{phrase}"'
    if report.suggest_copy:
        lines.append(f'[!] {check} -> suggest ticking "copies the expected output"')
    else:
        lines.append(check)
    return "\n".join(lines)


def _check_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, got {type(value).__name__}")


def _check_items(items: object) -> list[tuple[str, str]]:
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise InputError(f"items must be a sequence of (item_id, text) pairs, got {type(items).__name__}")
    pairs = []
    for index, pair in enumerate(items):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(isinstance(v, str) for v in pair):
            raise InputError(f"items[{index}] must be an (item_id, text) pair of strings, got {pair!r}"[:200])
        pairs.append((pair[0], pair[1]))
    return pairs
