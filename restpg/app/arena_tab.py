"""The Arena tab: two versions' outputs for one request, names hidden and order shuffled, the
user's real text as the reference; vote A / B / tie / both bad (keys a, b, t, x; n for another
pair). The names are revealed after the vote, and the leaderboard ranks the versions by a
Bradley-Terry fit with bootstrap intervals (restpg.store.arena)."""

from __future__ import annotations

import random
import time

import gradio as gr  # at the top: handlers' gr.Request hints resolve in this module's globals
import pandas as pd

from ..errors import PAGE_ERRORS
from ..store.arena import CHOICES, TooSoonError

CHOICE_LABELS = {"A": "A is better", "B": "B is better", "tie": "tie", "both_bad": "both bad"}
BOARD_COLUMNS = ["version", "rating", "95% CI", "votes", "wins", "losses", "ties", "both bad", "win rate"]


def board_frame(rows: list[dict]) -> pd.DataFrame:
    def ci(row):
        if row["ci_low"] is None:
            return ""
        return f"{row['ci_low']:.0f} - {row['ci_high']:.0f}"

    return pd.DataFrame(
        [
            {
                "version": r["version"],
                "rating": None if r["rating"] is None else round(r["rating"]),
                "95% CI": ci(r),
                "votes": r["votes"],
                "wins": r["wins"],
                "losses": r["losses"],
                "ties": r["ties"],
                "both bad": r["both_bad"],
                "win rate": None if r["win_rate"] is None else round(r["win_rate"], 3),
            }
            for r in rows
        ],
        columns=BOARD_COLUMNS,
    )


def revealed_text(choice: str, revealed: dict) -> str:
    """What the page says after a vote: the choice and the two names."""
    return f"you voted {CHOICE_LABELS[choice]}: A was {revealed['left_version']}, B was {revealed['right_version']}"


def board_figure(rows: list[dict]):
    """Ratings with their 95% intervals, best on top; None with nothing rated."""
    rated = [r for r in rows if r["rating"] is not None]
    if not rated:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rated = rated[::-1]
    names = [r["version"] for r in rated]
    base = names[0].split(" + ")[0] + " + "
    if all(name.startswith(base) or name == base[:-3] for name in names):  # "<base model> + <adapter>"
        names = [name.removeprefix(base) for name in names]
    figure, axes = plt.subplots(figsize=(10, 1.2 + 0.5 * len(rated)))
    for y, row in enumerate(rated):
        low = row["ci_low"] if row["ci_low"] is not None else row["rating"]
        high = row["ci_high"] if row["ci_high"] is not None else row["rating"]
        axes.errorbar(row["rating"], y, xerr=[[row["rating"] - low], [high - row["rating"]]], fmt="o", capsize=4)
    axes.set_yticks(range(len(rated)), names)
    axes.set_ylim(-0.6, len(rated) - 0.4)
    axes.set_xlabel("Bradley-Terry rating (Elo scale, mean 1000), 95% bootstrap interval")
    figure.tight_layout()
    plt.close(figure)
    return figure


def arena_tab(parts) -> dict:
    arena, access = parts.arena, parts.access

    def version_choices() -> list[str]:
        return sorted({row["model_version"] for row in arena.candidates()})

    def next_pair(annotator, versions, note="", request: gr.Request = None):
        empty = ("", "", "", "", "", "", "")
        try:
            name = access.annotator(annotator, request)
            match = arena.next_match(name, random.Random(), versions or None)
        except PAGE_ERRORS as error:
            return (*empty, str(error))
        if match is None:
            return (
                *empty,
                "no pair left for you: every request with outputs by two of these versions has your vote "
                "(one vote per pair and request), or none has two; generate more in Explore",
            )
        return (
            match.match_id,
            match.request,
            match.reference,
            match.left_reasoning,
            match.left_response,
            match.right_reasoning,
            match.right_response,
            note or f"{match.task} | record {match.record_id}: which output suits this user better?",
        )

    def vote(choice):
        def handler(match_id, annotator, versions, request: gr.Request = None):
            """Saves the vote and shows the next pair, with the vote buttons locked (unlock() opens
            them after the reading time). A refused vote leaves the pair on screen and says why."""
            locked = [gr.update(interactive=False)] * len(CHOICES)
            keep = (gr.update(),) * (len(pair_outputs) - 1)  # the pair on screen stays as it is
            if not match_id:
                return (gr.update(), *keep, "no pair on screen: press 'Next pair' (n)", *locked)
            try:
                revealed = arena.vote(match_id, access.annotator(annotator, request), choice)
            except TooSoonError as error:
                return (gr.update(), *keep, str(error), *locked)
            except PAGE_ERRORS as error:
                return (gr.update(), *keep, f"vote not saved: {error}", *locked)
            reveal = revealed_text(choice, revealed)
            return (reveal, *next_pair(annotator, versions, reveal, request), *locked)

        return handler

    def unlock():
        """The vote buttons open again once the pair on screen can have been read."""
        time.sleep(arena.min_read_seconds)
        return [gr.update(interactive=True)] * len(CHOICES)

    def board():
        rows = arena.leaderboard(bootstrap=1000, seed=0)
        return board_frame(rows), board_figure(rows)

    with gr.Row():
        annotator = gr.Textbox(label="annotator", placeholder="your name", elem_id="arena-annotator", scale=1)
        versions = gr.Dropdown(
            version_choices(),
            value=[],
            multiselect=True,
            label="versions to compare (empty: all)",
            scale=3,
            elem_id="arena-versions",
        )
        next_button = gr.Button("Next pair (n)", elem_id="arena-next", scale=1)
    gr.Markdown(
        "Two versions' outputs for the same request, **names hidden, order shuffled**. Read the user's real "
        "text, then vote with the buttons or the keys **a**, **b**, **t** (tie), **x** (both bad); the names "
        "are shown after the vote and the next pair follows."
    )
    info = gr.Textbox(label="status", interactive=False, elem_id="arena-status")
    match_id = gr.Textbox(visible=False, elem_id="arena-match")
    request = gr.Textbox(label="request", lines=2, interactive=False, elem_id="arena-request")
    reference = gr.Textbox(label="the user's real text (reference)", lines=6, interactive=False)
    with gr.Row():
        with gr.Column():
            left_reasoning = gr.Textbox(label="A: reasoning path", lines=8, interactive=False)
            left_response = gr.Textbox(label="A: response", lines=8, interactive=False, elem_id="arena-left")
        with gr.Column():
            right_reasoning = gr.Textbox(label="B: reasoning path", lines=8, interactive=False)
            right_response = gr.Textbox(label="B: response", lines=8, interactive=False, elem_id="arena-right")
    with gr.Row():
        buttons = {
            choice: gr.Button(f"{CHOICE_LABELS[choice]} ({key})", elem_id=f"arena-{choice.lower()}")
            for choice, key in zip(CHOICES, ("a", "b", "t", "x"))
        }
    revealed = gr.Textbox(label="last vote (names revealed)", interactive=False, elem_id="arena-revealed")
    with gr.Accordion("Leaderboard", open=True):
        board_button = gr.Button("Refresh leaderboard", elem_id="arena-board")
        board_table = gr.Dataframe(
            pd.DataFrame(columns=BOARD_COLUMNS),
            interactive=False,
            label="versions ranked by Bradley-Terry",
            elem_id="arena-table",
        )
        board_plot = gr.Plot(label="ratings with 95% bootstrap intervals")

    pair_outputs = [
        match_id,
        request,
        reference,
        left_reasoning,
        left_response,
        right_reasoning,
        right_response,
        info,
    ]
    next_button.click(next_pair, [annotator, versions], pair_outputs, api_name="arena_next")
    annotator.submit(next_pair, [annotator, versions], pair_outputs, api_visibility="private")
    vote_buttons = list(buttons.values())
    for choice, button in buttons.items():
        voted = button.click(
            vote(choice),
            [match_id, annotator, versions],
            [revealed, *pair_outputs, *vote_buttons],
            api_visibility="private",
        )
        voted.then(unlock, None, vote_buttons, api_visibility="private", concurrency_limit=None)
        voted.then(board, None, [board_table, board_plot], api_visibility="private")
    board_button.click(board, None, [board_table, board_plot], api_name="arena_leaderboard")

    # The scriptable vote (gradio_client, bench): the page's rules, and an error that says why.
    def arena_vote(match_id: str, annotator: str, choice: str, request: gr.Request | None = None) -> str:
        try:
            revealed = arena.vote(match_id, access.annotator(annotator, request), choice)
        except PAGE_ERRORS as error:
            raise gr.Error(str(error)) from error
        return revealed_text(choice, revealed)

    gr.api(arena_vote, api_name="arena_vote")

    def on_load():
        table, figure = board()
        return gr.update(choices=version_choices()), table, figure

    return dict(load=(on_load, [], [versions, board_table, board_plot]), annotator=annotator)
