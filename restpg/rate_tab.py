"""The Rate tab: rate stored reasoning paths 1-5 on three criteria, with keyboard shortcuts
(``restpg/rate_keys.js``: number keys rate, Enter saves, arrows move), a counter, filters,
guidelines, editing of past ratings, export and inter-annotator agreement."""

from __future__ import annotations

import re
import time

import pandas as pd

from .errors import PAGE_ERRORS
from .ratings import CRITERIA, Rating, RatingError

GUIDELINES = """\
Rate the **reasoning path** (not the response) for this user and request:

- **faithfulness** (1-5): every claim about the user is supported by the profile items the model saw.
  5 = nothing invented; 1 = mostly invented.
- **relevance** (1-5): it is about what matters for *this* request (topic, product, kind of text).
  5 = all of it; 1 = none of it.
- **usefulness** (1-5): it would help write this user's text (style, tone, length, recurring phrases).
  5 = a writer could follow it; 1 = no help.
- **copies the expected output**: tick when it quotes or paraphrases the user's real text, which the model
  must not have seen.

Keys (outside text fields): **1-5** rate the highlighted criterion and move to the next one, **c** toggles
the copy flag, **Enter** saves and moves on, **←/→** previous / next item.
"""
FILTERS = [
    ("not rated by me", "unrated"),
    ("rated by me", "mine"),
    ("low-rated (any criterion <= 2)", "low"),
    ("all", "all"),
]
ANY_VERSION = "any version"
SCORE_CHOICES = ["1", "2", "3", "4", "5"]


def _annotator(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise RatingError("enter your annotator name first")
    if not re.fullmatch(r"[\w .@-]{1,64}", name):
        raise RatingError(f"annotator {name!r}: use at most 64 letters, digits, spaces, '.', '@', '_' or '-'")
    return name


def rate_tab(parts):
    import gradio as gr

    ratings, generations = parts.ratings, parts.service.generations

    def version_choices():
        return [ANY_VERSION, *generations.model_versions()]

    def scope(version):
        return None if version in (None, ANY_VERSION) else {"model_version": version}

    def show(ids, index, annotator, version, status=""):
        counter = ""
        try:
            if annotator and annotator.strip():
                done, total = ratings.progress(_annotator(annotator), scope(version))
                counter = f"{done} of {total} rated by you"
        except RatingError as error:
            status = str(error)
        if not ids:
            return ("", "no items in this list", "", "", "", "", "", None, None, None, False, "", counter, status)
        index = max(0, min(index, len(ids) - 1))
        row = generations.get(ids[index])
        existing = ratings.get(annotator.strip(), row["generation_id"]) if annotator and annotator.strip() else None
        values = (
            [str(existing[c]) for c in CRITERIA] + [bool(existing["copies_output"]), existing["comment"]]
            if existing
            else [None, None, None, False, ""]
        )
        where = (
            f"item {index + 1} of {len(ids)} | {row['task']} | user {row['user_id']} | {row['model_version']}"
            f"{' | you rated it: editing' if existing else ''}"
        )
        return (
            row["generation_id"],
            where,
            row["request"],
            row["prompt"],
            row["reasoning"],
            row["response"],
            row["reference"],
            *values,
            counter,
            status,
        )

    def load(annotator, which, version):
        name, note = (annotator or "").strip(), ""
        if not name and which in ("unrated", "mine"):  # a first visit: show the items, ask for a name to rate
            which, note = (
                "all",
                "showing every item; enter your annotator name (then Enter) to rate and to see your own list",
            )
        try:
            ids = ratings.queue(_annotator(name) if which in ("unrated", "mine") else name, which, scope(version))
        except RatingError as error:
            return [], 0, *show([], 0, annotator, version, str(error)), gr.update(choices=version_choices())
        return ids, 0, *show(ids, 0, annotator, version, note), gr.update(choices=version_choices())

    def move(ids, index, annotator, version, step):
        index = max(0, min(index + step, len(ids) - 1)) if ids else 0
        return index, *show(ids, index, annotator, version)

    def save(generation_id, annotator, faithfulness, relevance, usefulness, copies, comment):
        """Save (or edit) one rating; the API endpoint the page and scripts call."""
        start = time.perf_counter()
        try:
            if not generation_id:
                raise RatingError("no item to rate")
            missing = [c for c, v in zip(CRITERIA, (faithfulness, relevance, usefulness)) if v in (None, "")]
            if missing:
                raise RatingError(f"rate {', '.join(missing)} first (1-5)")
            row = generations.get(generation_id)
            rating = Rating(
                generation_id,
                _annotator(annotator),
                _score(faithfulness, "faithfulness"),
                _score(relevance, "relevance"),
                _score(usefulness, "usefulness"),
                bool(copies),
                comment or "",
            )
            ratings.save(rating, row["model_version"], row["reasoning"], row["response"])
        except PAGE_ERRORS as error:
            raise gr.Error(str(error)) from error
        return f"saved rating of {generation_id} by {rating.annotator} ({(time.perf_counter() - start) * 1000:.0f} ms)"

    def save_and_next(
        ids, index, generation_id, annotator, version, faithfulness, relevance, usefulness, copies, comment
    ):
        status = save(generation_id, annotator, faithfulness, relevance, usefulness, copies, comment)
        index = min(index + 1, len(ids) - 1) if ids else 0
        return index, *show(ids, index, annotator, version, status)

    def export(kind):
        folder = parts.service.paths.runs_dir / "exports"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"ratings-{time.strftime('%Y%m%d-%H%M%S')}.{kind}"
        return str((ratings.export_csv if kind == "csv" else ratings.export_jsonl)(path))

    def agreement():
        result = ratings.agreement()
        rows = [
            {"criterion": name, "Krippendorff's alpha": None if result.get(name) is None else round(result[name], 3)}
            for name in (*CRITERIA, "copies_output")
        ]
        note = (
            f"{result.get('items', 0)} item(s) rated by 2 or more annotators; {result.get('annotators', 0)} annotator(s). "
            "Ordinal alpha for the 1-5 criteria, nominal for the copy flag; empty where undefined (too few items "
            "or no variation)."
        )
        return pd.DataFrame(rows), note

    with gr.Row():
        annotator = gr.Textbox(label="annotator", placeholder="your name", elem_id="rate-annotator", scale=1)
        which = gr.Radio(FILTERS, value="unrated", label="show", scale=2)
        # The list opens on the version the Explore tab opens on (the best shipped one), when it has items.
        opening = parts.service.version_id(parts.service.default_version())
        version = gr.Dropdown(
            version_choices(),
            value=opening if opening in version_choices() else ANY_VERSION,
            label="model version",
            scale=2,
            allow_custom_value=True,
        )
        load_button = gr.Button("Load items", elem_id="rate-load", scale=1)
    counter = gr.Textbox(label="progress", interactive=False, elem_id="rate-counter")
    with gr.Accordion("Guidelines", open=False):
        gr.Markdown(GUIDELINES)
    with gr.Row():
        generation_id = gr.Textbox(label="generation id", interactive=False, elem_id="rate-generation")
        where = gr.Textbox(label="item", interactive=False, scale=3)
    request = gr.Textbox(label="request", lines=2, interactive=False)
    with gr.Accordion("what the model saw (prompt with the retrieved profile items)", open=False):
        prompt = gr.Textbox(show_label=False, lines=10, interactive=False)
    with gr.Row():
        reasoning = gr.Textbox(
            label="reasoning path (rate this)", lines=12, interactive=False, elem_id="rate-reasoning"
        )
        response = gr.Textbox(label="response", lines=12, interactive=False)
        reference = gr.Textbox(label="the user's real text", lines=12, interactive=False)
    with gr.Row():
        scores = [gr.Radio(SCORE_CHOICES, label=name, elem_id=f"rate-{name}") for name in CRITERIA]
        copies = gr.Checkbox(label="copies the expected output", elem_id="rate-copies")
    comment = gr.Textbox(label="comment (optional)", lines=2)
    with gr.Row():
        previous = gr.Button("< previous", elem_id="rate-prev")
        save_button = gr.Button("Save (Enter)", variant="primary", elem_id="rate-save")
        following = gr.Button("next >", elem_id="rate-next")
    status = gr.Textbox(label="status", interactive=False, elem_id="rate-status")
    with gr.Accordion("Export and agreement", open=False):
        with gr.Row():
            csv_button = gr.Button("Export CSV")
            jsonl_button = gr.Button("Export JSONL")
            agreement_button = gr.Button("Agreement between annotators")
        export_file = gr.File(label="export", interactive=False)
        agreement_table = gr.Dataframe(interactive=False)
        agreement_note = gr.Textbox(show_label=False, interactive=False)

    ids, index = gr.State([]), gr.State(0)
    item_outputs = [
        generation_id,
        where,
        request,
        prompt,
        reasoning,
        response,
        reference,
        *scores,
        copies,
        comment,
        counter,
        status,
    ]
    load_inputs = [annotator, which, version]
    for trigger in (load_button.click, which.change, version.change, annotator.submit):
        trigger(load, load_inputs, [ids, index, *item_outputs, version], api_visibility="private")
    previous.click(
        lambda i, x, a, v: move(i, x, a, v, -1),
        [ids, index, annotator, version],
        [index, *item_outputs],
        api_visibility="private",
    )
    following.click(
        lambda i, x, a, v: move(i, x, a, v, 1),
        [ids, index, annotator, version],
        [index, *item_outputs],
        api_visibility="private",
    )
    save_button.click(
        save_and_next,
        [ids, index, generation_id, annotator, version, *scores, copies, comment],
        [index, *item_outputs],
        api_visibility="private",
    )

    # The scriptable endpoints (gradio_client, bench): one save, and the exports.
    def rate(
        generation_id: str,
        annotator: str,
        faithfulness: int,
        relevance: int,
        usefulness: int,
        copies_output: bool = False,
        comment: str = "",
    ) -> str:
        return save(generation_id, annotator, faithfulness, relevance, usefulness, copies_output, comment)

    gr.api(rate, api_name="rate")
    csv_button.click(lambda: export("csv"), None, export_file, api_name="export_csv")
    jsonl_button.click(lambda: export("jsonl"), None, export_file, api_name="export_jsonl")
    agreement_button.click(agreement, None, [agreement_table, agreement_note], api_name="agreement")
    return load, load_inputs, [ids, index, *item_outputs, version]


def _score(value, criterion: str) -> int:
    """A 1-5 score from the page (a number or its text); anything else is a RatingError naming the criterion."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RatingError(f"{criterion}: {value!r} is not a score from 1 to 5") from None
