"""The Rate tab: rate stored reasoning paths 1-5 on three criteria, with keyboard shortcuts
(``restpg/app/rate_keys.js``: number keys rate, Enter saves, arrows move), a counter, filters,
guidelines, editing of past ratings, export, inter-annotator agreement and the judge's agreement
with people (calibration).

A run's E-step samples are listed as versions of their own ("<run> round-N E-step samples") with a
filter by status (kept, trained on, vetoed, rejected): what raters say about them steers the
selection of a run started with ``--ratings-from`` (restpg.training.human_selection). Each item shows which
retrieved profile items its reasoning draws on (restpg.data.support) and a link that opens it again."""

from __future__ import annotations

import re
import time

import gradio as gr  # at the top: the API endpoint's type hints (gr.Request) resolve here
import pandas as pd

from ..errors import PAGE_ERRORS
from ..store.exports import EXPORT_FORMATS
from ..store.ratings import CRITERIA, MAX_COMMENT_CHARS, Rating, RatingError
from .links import page_link

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
STATUS_FILTERS = [
    ("any", ""),
    ("kept by the reward", "kept"),
    ("trained on", "trained"),
    ("vetoed by raters", "vetoed"),
    ("rejected by the reward", "rejected"),
]
STATUS_NOTES = {
    "kept": "kept by the reward rule; its round's M-step has not started, so ratings saved now steer it",
    "trained": (
        "in its round's training set (the M-step started with it): a rating saved now steers only a "
        "later run started with --ratings-from"
    ),
    "vetoed": "kept by the reward rule, removed by raters' ratings",
    "rejected": "below the reward rule (or empty, or cut at the token limit)",
}
SCORE_CHOICES = ["1", "2", "3", "4", "5"]
EMPTY_VALUES = [None, None, None, False, ""]  # the three scores, the copy flag, the comment
MAX_DRAFTS = 200  # unsaved ratings kept in the browser (oldest dropped first)


def rate_tab(parts):
    ratings, generations, access = parts.ratings, parts.service.generations, parts.access

    def version_choices():
        return [ANY_VERSION, *generations.model_versions()]

    def scope(version, status=""):
        where = {} if version in (None, ANY_VERSION) else {"model_version": version}
        return {**where, "sample_status": status} if status else (where or None)

    def who(annotator, request) -> str:
        try:
            return access.annotator(annotator, request)
        except PAGE_ERRORS as error:
            raise RatingError(str(error)) from None

    def login_or(annotator, request) -> str:
        """The name the lists are for: the login, else what was typed (maybe nothing yet)."""
        return access.login(request) or (annotator or "").strip()

    def describe(row) -> str:
        where = f"{row['task']} | user {row['user_id']} | {row['model_version']}"
        if row.get("sample_status"):
            note = STATUS_NOTES.get(row["sample_status"], row["sample_status"])
            where += f" | E-step sample, reward {row['reward']:.3f}: {note}"
        return where

    def saved_values(name, generation_id) -> list:
        existing = ratings.get(name, generation_id) if name and generation_id else None
        if not existing:
            return list(EMPTY_VALUES)
        return [str(existing[c]) for c in CRITERIA] + [bool(existing["copies_output"]), existing["comment"] or ""]

    def show(ids, index, annotator, version, status_filter, request, status="", drafts=None):
        counter = ""
        name = login_or(annotator, request)
        try:
            if name:
                done, total = ratings.progress(who(annotator, request), scope(version, status_filter))
                counter = f"{done} of {total} rated by you"
        except RatingError as error:
            status = str(error)
        if not ids:
            return (
                "",
                "no items in this list",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                None,
                None,
                None,
                False,
                "",
                counter,
                status,
            )
        index = max(0, min(index, len(ids) - 1))
        row = generations.get(ids[index])
        existing = ratings.get(name, row["generation_id"]) if name else None
        values = saved_values(name, row["generation_id"])
        draft = (drafts or {}).get(row["generation_id"])
        if draft:
            values = list(draft)
        where = f"item {index + 1} of {len(ids)} | {describe(row)}{' | you rated it: editing' if existing else ''}"
        if draft:
            where += " | unsaved draft: Save keeps it, Discard drops it"
        return (
            row["generation_id"],
            where,
            page_link(request, rate=row["generation_id"]),
            row["request"],
            row["prompt"],
            row["reasoning"],
            row["response"],
            row["reference"],
            parts.service.support(row),
            *values,
            counter,
            status,
        )

    def load(annotator, which, version, status_filter, drafts=None, request: gr.Request = None):
        name, note = login_or(annotator, request), ""
        problems = parts.service.import_samples()  # runs' E-step samples, new ones only
        if problems:
            note = "some run folders could not be read: " + "; ".join(problems)
        if not name and which in ("unrated", "mine"):  # a first visit: show the items, ask for a name to rate
            which, note = (
                "all",
                "showing every item; enter your annotator name (then Enter) to rate and to see your own list",
            )
        try:
            ids = ratings.queue(
                who(annotator, request) if which in ("unrated", "mine") else name,
                which,
                scope(version, status_filter),
            )
        except RatingError as error:
            return (
                [],
                0,
                *show([], 0, annotator, version, status_filter, request, str(error)),
                gr.update(choices=version_choices()),
            )
        return (
            ids,
            0,
            *show(ids, 0, annotator, version, status_filter, request, note, drafts),
            gr.update(choices=version_choices()),
        )

    def open_item(generation_id, annotator, request, drafts=None):
        """The page opened with ``?rate=<id>``: that item alone, in any list."""
        try:
            generations.get(generation_id)
        except PAGE_ERRORS as error:
            return [], 0, *show([], 0, annotator, ANY_VERSION, "", request, f"link: {error}")
        note = "opened from a link; enter your name (then Enter) to rate it"
        return [generation_id], 0, *show([generation_id], 0, annotator, ANY_VERSION, "", request, note, drafts)

    def keep_on_item(annotator, which, version, status_filter, drafts, ids, index, generation_id, request=None):
        """The name typed (Enter): the list is made for it, on the item on screen. An item opened from
        a link, or one the new list does not hold, stays on screen in its own list."""
        new_ids, _, *_ = load(annotator, which, version, status_filter, drafts, request)
        if generation_id in new_ids:
            ids, index = new_ids, new_ids.index(generation_id)
        elif not generation_id:
            ids, index = new_ids, 0
        note = (
            ""
            if generation_id in new_ids or not generation_id
            else "this item is not in your list: 'Load items' opens it"
        )
        return (
            ids,
            index,
            *show(ids, index, annotator, version, status_filter, request, note, drafts),
            gr.update(choices=version_choices()),
        )

    def keep_draft(drafts, generation_id, annotator, values, request) -> tuple[dict, str]:
        """The item's scores and comment kept as a draft when they differ from what is saved."""
        drafts = dict(drafts or {})
        if not generation_id:
            return drafts, ""
        values = [None if v in (None, "") else v for v in values[:3]] + [bool(values[3]), values[4] or ""]
        if values == saved_values(login_or(annotator, request), generation_id):
            drafts.pop(generation_id, None)
            return drafts, ""
        drafts.pop(generation_id, None)
        drafts[generation_id] = values
        while len(drafts) > MAX_DRAFTS:
            drafts.pop(next(iter(drafts)))
        return drafts, f"unsaved scores of {generation_id} kept as a draft (not saved): go back to save them"

    def move(ids, index, annotator, version, status_filter, step, values, drafts, request=None):
        generation_id = ids[index] if ids and 0 <= index < len(ids) else ""
        drafts, note = keep_draft(drafts, generation_id, annotator, values, request)
        index = max(0, min(index + step, len(ids) - 1)) if ids else 0
        return index, *show(ids, index, annotator, version, status_filter, request, note, drafts), drafts

    def discard(ids, index, annotator, version, status_filter, generation_id, drafts, request: gr.Request = None):
        drafts = {k: v for k, v in (drafts or {}).items() if k != generation_id}
        note = f"draft of {generation_id} discarded" if generation_id else ""
        return index, *show(ids, index, annotator, version, status_filter, request, note, drafts), drafts

    def save(generation_id, annotator, faithfulness, relevance, usefulness, copies, comment, request=None):
        """Save (or edit) one rating; a refusal is a RatingError (or another page error) saying why."""
        start = time.perf_counter()
        if not generation_id:
            raise RatingError("no item to rate")
        missing = [c for c, v in zip(CRITERIA, (faithfulness, relevance, usefulness)) if v in (None, "")]
        if missing:
            raise RatingError(f"rate {', '.join(missing)} first (1-5)")
        row = generations.get(generation_id)
        rating = Rating(
            generation_id,
            who(annotator, request),
            _score(faithfulness, "faithfulness"),
            _score(relevance, "relevance"),
            _score(usefulness, "usefulness"),
            _flag(copies, "copies_output"),
            comment or "",
        )
        ratings.save(rating, row["model_version"], row["reasoning"], row["response"])
        return f"saved rating of {generation_id} by {rating.annotator} ({(time.perf_counter() - start) * 1000:.0f} ms)"

    def save_and_next(
        ids,
        index,
        generation_id,
        annotator,
        version,
        status_filter,
        faithfulness,
        relevance,
        usefulness,
        copies,
        comment,
        drafts,
        request: gr.Request = None,
    ):
        """Saves and moves on. A refused save keeps the item and what was entered on screen, and says
        why in the status line under the buttons (no error badge over the item)."""
        try:
            status = save(generation_id, annotator, faithfulness, relevance, usefulness, copies, comment, request)
        except PAGE_ERRORS as error:
            keep = (gr.update(),) * (len(item_outputs) - 1)
            return index, *keep, f"not saved: {error}", drafts
        drafts = {k: v for k, v in (drafts or {}).items() if k != generation_id}
        index = min(index + 1, len(ids) - 1) if ids else 0
        return index, *show(ids, index, annotator, version, status_filter, request, status, drafts), drafts

    def export(kind, request=None):
        """Every rating for a trainer (everyone without --trainers); a rater's own ratings otherwise."""
        folder = parts.service.paths.runs_dir / "exports"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        only = None if access.may_train(request) else access.annotator(None, request)
        name = f"ratings-{stamp}" if only is None else f"ratings-{re.sub(r'[^A-Za-z0-9_.@-]', '_', only)}-{stamp}"
        try:
            if kind == "hf":  # a datasets folder: offered as a zip of it
                import shutil

                out = ratings.export(folder / name, "hf", only)
                return shutil.make_archive(str(out), "zip", root_dir=out)
            return str(ratings.export(folder / f"{name}.{kind}", kind, only))
        except PAGE_ERRORS as error:
            raise gr.Error(str(error)) from error

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

    def calibrate(group_by, mine, annotator, request: gr.Request = None):
        from ..store.calibration import calibration, to_frames

        try:
            name = who(annotator, request) if mine else None
            result = calibration(parts.service.store, group_by=group_by, annotator=name, bootstrap=1000)
        except PAGE_ERRORS as error:
            return pd.DataFrame(), pd.DataFrame(), str(error)
        correlations, levels = to_frames(result)
        note = (
            f"{result.items} rated item(s), {result.ratings} rating(s)"
            f"{f' by {name}' if name else ''}; {result.skipped} rating(s) of generations no longer stored were "
            "skipped. Each human score is the mean over the item's raters; Spearman and Kendall with 95% "
            "bootstrap intervals (1,000 resamples of items); empty where undefined (fewer than 3 items or "
            "no variation). Judge: level / 10 from the run's or the page's judge; for E-step samples, their reward."
        )
        return correlations, levels, note

    with gr.Row():
        annotator = gr.Textbox(label="annotator", placeholder="your name", elem_id="rate-annotator", scale=1)
        which = gr.Radio(FILTERS, value="unrated", label="show", scale=2)
        # The list opens on the version the Explore tab opens on (the best shipped one), when it has items.
        opening = parts.service.version_id(parts.service.default_version())
        version = gr.Dropdown(
            version_choices(),
            value=opening if opening in version_choices() else ANY_VERSION,
            label="model version, or a run's E-step samples",
            scale=2,
            allow_custom_value=True,
            elem_id="rate-version",
        )
        status_filter = gr.Dropdown(
            STATUS_FILTERS, value="", label="E-step samples: status", scale=1, elem_id="rate-status-filter"
        )
        load_button = gr.Button("Load items", elem_id="rate-load", scale=1)
    counter = gr.Textbox(label="progress", interactive=False, elem_id="rate-counter")
    with gr.Accordion("Guidelines", open=False):
        gr.Markdown(GUIDELINES)
    with gr.Row():
        generation_id = gr.Textbox(label="generation id", interactive=False, elem_id="rate-generation")
        where = gr.Textbox(label="item", interactive=False, scale=3, elem_id="rate-where")
        link = gr.Textbox(label="link to this item", interactive=False, scale=2, elem_id="rate-link")
    request = gr.Textbox(label="request", lines=2, interactive=False)
    with gr.Accordion("what the model saw (prompt with the retrieved profile items)", open=False):
        prompt = gr.Textbox(show_label=False, lines=10, interactive=False)
    with gr.Row():
        reasoning = gr.Textbox(
            label="reasoning path (rate this)", lines=12, interactive=False, elem_id="rate-reasoning"
        )
        response = gr.Textbox(label="response", lines=12, interactive=False)
        reference = gr.Textbox(label="the user's real text", lines=12, interactive=False)
    support = gr.Textbox(
        label="which retrieved profile items each reasoning sentence draws on (lexical overlap)",
        lines=6,
        interactive=False,
        elem_id="rate-support",
    )
    with gr.Row():
        scores = [gr.Radio(SCORE_CHOICES, label=name, elem_id=f"rate-{name}") for name in CRITERIA]
        copies = gr.Checkbox(label="copies the expected output", elem_id="rate-copies")
    comment = gr.Textbox(
        label=f"comment (optional, at most {MAX_COMMENT_CHARS:,} characters)",
        lines=2,
        max_length=MAX_COMMENT_CHARS,
        elem_id="rate-comment",
    )
    with gr.Row():
        previous = gr.Button("< previous", elem_id="rate-prev")
        save_button = gr.Button("Save (Enter)", variant="primary", elem_id="rate-save")
        discard_button = gr.Button("Discard draft", elem_id="rate-discard")
        following = gr.Button("next >", elem_id="rate-next")
    status = gr.Textbox(label="status", interactive=False, elem_id="rate-status")
    with gr.Accordion("Does the judge agree with people? (calibration)", open=False):
        with gr.Row():
            group_by = gr.Radio(
                [("model version / E-step samples", "model_version"), ("task", "task")],
                value="model_version",
                label="group by",
            )
            mine = gr.Checkbox(label="my ratings only", value=False)
            calibrate_button = gr.Button("Compute calibration", elem_id="rate-calibrate")
        correlations_table = gr.Dataframe(
            interactive=False, label="rank correlation of each human score with the judge and ROUGE-L"
        )
        levels_table = gr.Dataframe(interactive=False, label="mean human score at each judge level")
        calibration_note = gr.Textbox(show_label=False, interactive=False, lines=2)
    with gr.Accordion("Export and agreement", open=False):
        with gr.Row():
            export_buttons = {
                kind: gr.Button(f"Export {label}")
                for kind, label in zip(EXPORT_FORMATS, ("CSV", "JSONL", "Parquet", "HF datasets folder (zip)"))
            }
            agreement_button = gr.Button("Agreement between annotators")
        export_file = gr.File(label="export", interactive=False)
        agreement_table = gr.Dataframe(interactive=False)
        agreement_note = gr.Textbox(show_label=False, interactive=False)

    ids, index = gr.State([]), gr.State(0)
    # Unsaved scores and comments per item, kept in this browser (they survive next/previous and a reload)
    drafts = gr.BrowserState({}, storage_key="restpg-rate-drafts")
    item_outputs = [
        generation_id,
        where,
        link,
        request,
        prompt,
        reasoning,
        response,
        reference,
        support,
        *scores,
        copies,
        comment,
        counter,
        status,
    ]
    load_inputs = [annotator, which, version, status_filter, drafts]
    for trigger in (load_button.click, which.change, version.change, status_filter.change):
        trigger(load, load_inputs, [ids, index, *item_outputs, version], api_visibility="private")
    annotator.submit(
        keep_on_item,
        [*load_inputs, ids, index, generation_id],
        [ids, index, *item_outputs, version],
        api_visibility="private",
    )
    view = [ids, index, annotator, version, status_filter]
    entered = [*scores, copies, comment]

    def go_previous(i, x, a, v, f, s1, s2, s3, c, t, d, request: gr.Request = None):
        return move(i, x, a, v, f, -1, [s1, s2, s3, c, t], d, request)

    def go_next(i, x, a, v, f, s1, s2, s3, c, t, d, request: gr.Request = None):
        return move(i, x, a, v, f, 1, [s1, s2, s3, c, t], d, request)

    previous.click(go_previous, [*view, *entered, drafts], [index, *item_outputs, drafts], api_visibility="private")
    following.click(go_next, [*view, *entered, drafts], [index, *item_outputs, drafts], api_visibility="private")
    discard_button.click(
        discard, [*view, generation_id, drafts], [index, *item_outputs, drafts], api_visibility="private"
    )
    save_button.click(
        save_and_next,
        [ids, index, generation_id, annotator, version, status_filter, *entered, drafts],
        [index, *item_outputs, drafts],
        api_visibility="private",
    )
    calibrate_button.click(
        calibrate,
        [group_by, mine, annotator],
        [correlations_table, levels_table, calibration_note],
        api_name="calibration",
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
        request: gr.Request | None = None,
    ) -> str:
        try:
            return save(generation_id, annotator, faithfulness, relevance, usefulness, copies_output, comment, request)
        except PAGE_ERRORS as error:
            raise gr.Error(str(error)) from error

    gr.api(rate, api_name="rate")

    def exporter(kind):
        def run(request: gr.Request = None):
            return export(kind, request)

        return run

    for kind, button in export_buttons.items():
        button.click(exporter(kind), None, export_file, api_name=f"export_{kind}")
    agreement_button.click(agreement, None, [agreement_table, agreement_note], api_name="agreement")
    return dict(
        load=(load, load_inputs, [ids, index, *item_outputs, version]),
        open=(open_item, [ids, index, *item_outputs]),
        annotator=annotator,
    )


def _score(value, criterion: str) -> int:
    """A score on the 1-5 scale: an integer, or its text as the page's buttons send it. Anything else
    (True, 3.9, inf, "3.0", 9) is a RatingError naming the criterion, never rounded or coerced."""
    if isinstance(value, str) and value.strip() in SCORE_CHOICES:
        return int(value.strip())
    if not isinstance(value, bool) and isinstance(value, int) and 1 <= value <= 5:
        return value
    raise RatingError(f"{criterion}: {value!r} is not a score on the scale (one of 1, 2, 3, 4, 5)")


def _flag(value, name: str) -> bool:
    """A yes/no answer: true or false (JSON's), or their text; missing is no. Anything else is a
    RatingError naming the field ("false" is no, never True because it is a non-empty text)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise RatingError(f"{name}: {value!r} is not true or false")
