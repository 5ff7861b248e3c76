"""A blind arena across model versions, kept in the app's SQLite store.

For one request, the stored outputs of two model versions are shown side by side as A (left) and B
(right), names hidden and the order shuffled; the annotator votes ``A``, ``B``, ``tie`` or
``both_bad``, and only then are the names revealed. ``matches`` holds every match shown (the pair,
the order shown, the annotator) and its vote once cast. A vote is one ``BEGIN IMMEDIATE``
transaction that sets the winner only if none is set yet, so a match is never counted twice, even
when two tabs or processes vote on it at once.

Candidates are the ``generations`` table's newest finished generation (``stopped = 0``, non-empty
response) per (dataset, record_id, model_version); a match pairs two different versions of the same
record. The leaderboard ranks versions with a Bradley-Terry fit (:func:`bradley_terry`) with a
percentile-bootstrap confidence interval over the voted matches.

Rating scale: Elo-like points, ``1000 + 400 * log10(strength)``, the log-strengths centred to mean 0
over the fitted versions, so the ratings average 1000 and a 400-point gap means 10:1 odds of winning.
A tie counts as half a win each way; ``both_bad`` votes are counted but do not enter the fit.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import RestpgError
from .database import Store
from .ratings import annotator_name

CHOICES = ("A", "B", "tie", "both_bad")
RATING_BASE = 1000.0
RATING_SCALE = 400.0 / math.log(10.0)  # Elo points per unit of log-strength
DEFAULT_ALPHA = 0.01  # choix's regularisation: keeps a version with only wins finite
# The page's rule (restpg.app.page): a vote on a pair shown for less than this is refused, so a second
# click or key press meant for the last pair never lands on the next one unread. FastChat's arena
# disables its vote buttons until a new round; the page also locks them this long.
PAGE_READ_SECONDS = 1.0
# Shown in both reasoning boxes when one of the two versions writes no reasoning path (the base model,
# ReST-EM, SFT without reasoning): an empty box on one side would name it.
HIDDEN_REASONING = (
    "(reasoning paths hidden in this pair: one of the two versions writes none, which would give it away; "
    "compare the responses)"
)

_MATCH_COLUMNS = {
    "match_id": str,
    "dataset": str,
    "record_id": str,
    "left_id": str,  # generation shown as A
    "right_id": str,  # generation shown as B
    "left_version": str,
    "right_version": str,
    "annotator": str,
    "created": float,
    "winner": str,  # NULL until voted, then one of CHOICES
    "winner_version": str,  # the version that won; '' for tie and both_bad
    "voted_at": float,
}


class ArenaError(RestpgError, ValueError):
    """A bad vote, an unknown or already voted match, or a bad argument."""


class TooSoonError(ArenaError):
    """A vote on a pair that has not been on screen long enough to be read (nothing is saved)."""


@dataclass(frozen=True)
class Match:
    """What the page shows for one match: the request and the two outputs, A left and B right.

    It holds no model version names (nor generation ids): those stay in the ``matches`` row and are
    revealed by :meth:`ArenaStore.vote`.
    """

    match_id: str
    dataset: str
    record_id: str
    task: str
    request: str
    reference: str
    left_reasoning: str
    left_response: str
    right_reasoning: str
    right_response: str
    reasoning_hidden: bool = False  # one side writes no reasoning: both boxes show HIDDEN_REASONING


def _annotator(annotator: Any) -> str:
    return annotator_name(annotator, ArenaError)


def _versions(versions: Any) -> list[str] | None:
    if versions is None:
        return None
    if isinstance(versions, str) or not all(isinstance(v, str) for v in versions):
        raise ArenaError(f"versions must be a list of model version names, got {versions!r}")
    return list(versions)


class ArenaStore:
    def __init__(self, store: Store, min_read_seconds: float = 0.0) -> None:
        """``min_read_seconds``: a vote on a match shown more recently than this is refused
        (:class:`TooSoonError`); the page uses :data:`PAGE_READ_SECONDS`, scripts 0."""
        self.store = store
        self.min_read_seconds = min_read_seconds
        self._leaderboards: dict[tuple, list[dict]] = {}  # the latest votes' fitted board (leaderboard)
        with store.write() as db:
            db["matches"].create(_MATCH_COLUMNS, pk="match_id", if_not_exists=True)
            db["matches"].create_index(["annotator"], if_not_exists=True)
            db["matches"].create_index(["dataset", "record_id"], if_not_exists=True)

    def candidates(self, versions: Sequence[str] | None = None) -> list[dict]:
        """The newest finished generation per (dataset, record_id, model_version) with a non-empty
        response, restricted to ``versions`` when given; ordered by dataset, record_id, model_version."""
        versions = _versions(versions)
        if not self.store.db["generations"].exists():
            return []
        where, params = "", []
        # E-step samples (restpg.store.samples) are rated, not compared: several per record and version.
        columns = self.store.db["generations"].columns_dict
        sample_clause = "sample_status IS NULL" if "sample_status" in columns else "1"
        if versions is not None:
            where, params = f"WHERE model_version IN ({', '.join('?' * len(versions))})", versions
        sql = f"""
            SELECT * FROM (
                SELECT generation_id, dataset, record_id, task, request, reference, model_version,
                       reasoning, response,
                       ROW_NUMBER() OVER (
                           PARTITION BY dataset, record_id, model_version ORDER BY created DESC, generation_id DESC
                       ) AS newest
                FROM generations
                WHERE stopped = 0 AND response IS NOT NULL AND TRIM(response) != ''
                  AND {sample_clause}
            )
            {where} {"AND" if where else "WHERE"} newest = 1
            ORDER BY dataset, record_id, model_version
        """
        return [{k: v for k, v in row.items() if k != "newest"} for row in self.store.db.query(sql, params)]

    def next_match(self, annotator: str, rng: random.Random, versions: Sequence[str] | None = None) -> Match | None:
        """Start a match for ``annotator``: two versions of one record, in an order drawn with ``rng``.

        Among the (record, version pair)s this annotator has not voted on (a voted one's names are known
        to them, and only one vote per annotator, pair and request counts) it prefers, in turn: the one
        shown to them least often without a vote (a skipped pair does not come straight back, swapped);
        the version pair they have voted on least; the record they voted on least; then draws at random
        with ``rng``. The match row is stored unvoted. None when no such (record, pair) is left.
        """
        annotator = _annotator(annotator)
        by_record: dict[tuple[str, str], list[dict]] = {}
        for row in self.candidates(versions):
            by_record.setdefault((row["dataset"], row["record_id"]), []).append(row)
        voted = self.store.db.execute(
            "SELECT dataset, record_id, left_version, right_version FROM matches "
            "WHERE annotator = ? AND winner IS NOT NULL",
            [annotator],
        ).fetchall()
        skipped = Counter(
            (d, r, *sorted((left, right)))
            for d, r, left, right in self.store.db.execute(
                "SELECT dataset, record_id, left_version, right_version FROM matches "
                "WHERE annotator = ? AND winner IS NULL",
                [annotator],
            ).fetchall()
        )
        pair_votes = Counter(tuple(sorted((left, right))) for _, _, left, right in voted)
        record_pair_votes = Counter((d, r, *sorted((left, right))) for d, r, left, right in voted)
        record_votes = Counter((d, r) for d, r, _, _ in voted)

        options = []  # (preference key, record, first row, second row)
        for record, rows in sorted(by_record.items()):
            for i, first in enumerate(rows):
                for second in rows[i + 1 :]:
                    pair = tuple(sorted((first["model_version"], second["model_version"])))
                    if record_pair_votes[(*record, *pair)]:
                        continue  # voted: its names are known to this annotator, and one vote counts
                    key = (skipped[(*record, *pair)], pair_votes[pair], record_votes[record])
                    options.append((key, first, second))
        if not options:
            return None
        best = min(key for key, _, _ in options)
        _, left, right = rng.choice([option for option in options if option[0] == best])
        if rng.random() < 0.5:
            left, right = right, left

        row = {
            "match_id": uuid.uuid4().hex,
            "dataset": left["dataset"],
            "record_id": left["record_id"],
            "left_id": left["generation_id"],
            "right_id": right["generation_id"],
            "left_version": left["model_version"],
            "right_version": right["model_version"],
            "annotator": annotator,
            "created": time.time(),
            "winner": None,
            "winner_version": None,
            "voted_at": None,
        }
        with self.store.write() as db:
            db["matches"].insert(row)
        left_reasoning, right_reasoning = (left["reasoning"] or "").strip(), (right["reasoning"] or "").strip()
        hidden = not (left_reasoning and right_reasoning)
        return Match(
            match_id=row["match_id"],
            dataset=left["dataset"],
            record_id=left["record_id"],
            task=left["task"] or "",
            request=left["request"] or "",
            reference=left["reference"] or "",
            left_reasoning=HIDDEN_REASONING if hidden else left_reasoning,
            left_response=left["response"] or "",
            right_reasoning=HIDDEN_REASONING if hidden else right_reasoning,
            right_response=right["response"] or "",
            reasoning_hidden=hidden,
        )

    def vote(self, match_id: str, annotator: str, choice: str) -> dict:
        """Record ``annotator``'s vote on their match and reveal the names.

        Returns ``{"left_version", "right_version", "winner", "winner_version"}``. A match can be voted
        once, by the annotator it was shown to, once it has been shown ``min_read_seconds``; the checks
        and the update are one write transaction.
        """
        if choice not in CHOICES:
            raise ArenaError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
        annotator = _annotator(annotator)
        with self.store.write() as db:
            found = db.execute(
                "SELECT annotator, left_version, right_version, winner, created FROM matches WHERE match_id = ?",
                [match_id],
            ).fetchone()
            if found is None:
                raise ArenaError(f"no match {match_id!r}")
            shown_to, left_version, right_version, winner, created = found
            if shown_to != annotator:
                raise ArenaError(f"match {match_id!r} was shown to another annotator, not {annotator!r}")
            if winner is not None:
                raise ArenaError(f"match {match_id!r} was already voted ({winner})")
            shown_for = time.time() - (created or 0.0)
            if shown_for < self.min_read_seconds:
                raise TooSoonError(
                    f"vote not saved: this pair has been on screen {max(shown_for, 0.0):.1f} s; read both outputs "
                    f"first (votes count after {self.min_read_seconds:g} s)"
                )
            dataset, record_id = db.execute(
                "SELECT dataset, record_id FROM matches WHERE match_id = ?", [match_id]
            ).fetchone()
            earlier = db.execute(
                "SELECT COUNT(*) FROM matches WHERE annotator = ? AND dataset = ? AND record_id = ? "
                "AND winner IS NOT NULL AND ((left_version = ? AND right_version = ?) "
                "OR (left_version = ? AND right_version = ?))",
                [annotator, dataset, record_id, left_version, right_version, right_version, left_version],
            ).fetchone()[0]
            if earlier:
                raise ArenaError(
                    f"{annotator!r} already voted on these two versions for this request; one vote per "
                    "annotator, pair and request counts"
                )
            winner_version = {"A": left_version, "B": right_version}.get(choice, "")
            updated = db.execute(
                "UPDATE matches SET winner = ?, winner_version = ?, voted_at = ? WHERE match_id = ? AND winner IS NULL",
                [choice, winner_version, time.time(), match_id],
            )
            if updated.rowcount != 1:  # cannot happen under the write lock; never count a vote twice
                raise ArenaError(f"match {match_id!r} was already voted")
        return {
            "left_version": left_version,
            "right_version": right_version,
            "winner": choice,
            "winner_version": winner_version,
        }

    def get(self, match_id: str) -> dict | None:
        """The stored row of a match (names included), or None."""
        rows = list(self.store.db["matches"].rows_where("match_id = ?", [match_id]))
        return rows[0] if rows else None

    def export(self, path, fmt: str, versions: Sequence[str] | None = None):
        """The voted matches (:meth:`votes`), one row each, oldest vote first, as ``fmt`` (one of
        ``restpg.store.exports.EXPORT_FORMATS``); the target is replaced atomically."""
        from .exports import export_rows, table_columns

        return export_rows(self.votes(versions), path, fmt, table_columns(self.store.db, "matches"))

    def votes(self, versions: Sequence[str] | None = None) -> list[dict]:
        """Voted matches, oldest vote first; with ``versions``, only matches between two of them."""
        versions = _versions(versions)
        where, params = "winner IS NOT NULL", []
        if versions is not None:
            marks = ", ".join("?" * len(versions))
            where += f" AND left_version IN ({marks}) AND right_version IN ({marks})"
            params = versions + versions
        return list(self.store.db["matches"].rows_where(where, params, order_by="voted_at, match_id"))

    def leaderboard(self, bootstrap: int = 1000, seed: int = 0, versions: Sequence[str] | None = None) -> list[dict]:
        """:func:`leaderboard` over the voted matches (between ``versions`` when given). The fit and
        its bootstrap are computed once per set of votes (kept until a vote is added), not on every
        page load."""
        rows = self.votes(versions)
        key = (len(rows), rows[-1]["match_id"] if rows else None, tuple(_versions(versions) or ()), bootstrap, seed)
        if key not in self._leaderboards:
            self._leaderboards.clear()  # only the latest votes' board is worth keeping
            self._leaderboards[key] = leaderboard(
                [(r["left_version"], r["right_version"], r["winner"]) for r in rows], bootstrap, seed
            )
        return [dict(row) for row in self._leaderboards[key]]


def _check_votes(votes: Sequence[tuple[str, str, str]]) -> None:
    for vote in votes:
        if len(vote) != 3 or vote[2] not in CHOICES or vote[0] == vote[1]:
            raise ArenaError(
                f"a vote must be (left_version, right_version, choice) with two different versions and a "
                f"choice in {', '.join(CHOICES)}, got {vote!r}"
            )


def _comparisons(votes: Sequence[tuple[str, str, str]], index: dict[str, int]):
    """Per vote: the two versions' indices and the wins each gets (a tie: half each; both_bad: none)."""
    import numpy as np

    share = {"A": (1.0, 0.0), "B": (0.0, 1.0), "tie": (0.5, 0.5), "both_bad": (0.0, 0.0)}
    left = np.array([index.get(v[0], 0) for v in votes], dtype=int)
    right = np.array([index.get(v[1], 0) for v in votes], dtype=int)
    fitted = np.array([v[0] in index and v[1] in index for v in votes], dtype=bool)
    left_wins = np.array([share[v[2]][0] for v in votes], dtype=float) * fitted
    right_wins = np.array([share[v[2]][1] for v in votes], dtype=float) * fitted
    return left, right, left_wins, right_wins


def _fit(n: int, left, right, left_wins, right_wins, alpha: float):
    """Elo-like ratings from per-vote win shares (a dense choix fit), as a numpy array."""
    import choix
    import numpy as np

    wins = np.zeros((n, n))  # wins[i, j]: how often i beat j
    np.add.at(wins, (left, right), left_wins)
    np.add.at(wins, (right, left), right_wins)
    strength = choix.ilsr_pairwise_dense(wins, alpha=alpha, max_iter=10_000)
    return RATING_BASE + RATING_SCALE * (strength - strength.mean())


def _fitted_versions(votes: Sequence[tuple[str, str, str]]) -> list[str]:
    """Versions with at least one A/B/tie vote, when there are two or more of them; else none."""
    names = sorted({name for left, right, choice in votes if choice != "both_bad" for name in (left, right)})
    return names if len(names) >= 2 else []


def bradley_terry(votes: Sequence[tuple[str, str, str]], alpha: float = DEFAULT_ALPHA) -> dict[str, float]:
    """Bradley-Terry ratings from votes ``(left_version, right_version, choice)``, on the Elo-like scale.

    A tie is half a win each way; ``both_bad`` votes are left out. Only versions with an A/B/tie vote
    are rated; fewer than two such versions give ``{}``. ``alpha`` is choix's regularisation.
    """
    _check_votes(votes)
    names = _fitted_versions(votes)
    if not names:
        return {}
    ratings = _fit(len(names), *_comparisons(votes, {name: i for i, name in enumerate(names)}), alpha)
    return {name: float(r) for name, r in zip(names, ratings)}


def leaderboard(
    votes: Sequence[tuple[str, str, str]], bootstrap: int = 1000, seed: int = 0, alpha: float = DEFAULT_ALPHA
) -> list[dict]:
    """One row per version in a vote: ``version, rating, ci_low, ci_high, votes, wins, losses, ties,
    both_bad, win_rate``, by rating (highest first; unrated versions last, by name).

    ``rating`` is :func:`bradley_terry`'s (None for a version with only ``both_bad`` votes, or when
    fewer than two versions have any other vote). ``ci_low``/``ci_high``: the 95% percentile bootstrap
    interval, refitting on the votes resampled with replacement ``bootstrap`` times with
    ``numpy.random.default_rng(seed)`` (None with ``bootstrap=0``). ``win_rate`` is
    ``(wins + ties / 2) / (wins + losses + ties)``, None without such votes.
    """
    import numpy as np

    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ArenaError(f"bootstrap must be a whole number >= 0, got {bootstrap!r}")
    _check_votes(votes)
    counts: dict[str, Counter] = {}
    for left, right, choice in votes:
        for name, won, lost in ((left, "A", "B"), (right, "B", "A")):
            c = counts.setdefault(name, Counter())
            c["votes"] += 1
            c["wins"] += choice == won
            c["losses"] += choice == lost
            c["ties"] += choice == "tie"
            c["both_bad"] += choice == "both_bad"

    names = _fitted_versions(votes)
    ratings: dict[str, float] = {}
    intervals: dict[str, tuple[float, float]] = {}
    if names:
        comparisons = _comparisons(votes, {name: i for i, name in enumerate(names)})
        point = _fit(len(names), *comparisons, alpha)
        ratings = {name: float(r) for name, r in zip(names, point)}
        if bootstrap:
            rng = np.random.default_rng(seed)
            samples = np.empty((bootstrap, len(names)))
            for b in range(bootstrap):
                chosen = rng.integers(0, len(votes), len(votes))
                samples[b] = _fit(len(names), *(part[chosen] for part in comparisons), alpha)
            low, high = np.percentile(samples, [2.5, 97.5], axis=0)
            intervals = {name: (float(lo), float(hi)) for name, lo, hi in zip(names, low, high)}

    rows = []
    for name, c in counts.items():
        played = c["wins"] + c["losses"] + c["ties"]
        ci = intervals.get(name, (None, None))
        rows.append(
            {
                "version": name,
                "rating": ratings.get(name),
                "ci_low": ci[0],
                "ci_high": ci[1],
                "votes": c["votes"],
                "wins": c["wins"],
                "losses": c["losses"],
                "ties": c["ties"],
                "both_bad": c["both_bad"],
                "win_rate": (c["wins"] + 0.5 * c["ties"]) / played if played else None,
            }
        )
    rows.sort(key=lambda r: (r["rating"] is None, -(r["rating"] or 0.0), r["version"]))
    return rows
