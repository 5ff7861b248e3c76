"""The Explore tab: a LongLaMP user's profile (retrieved items first), the request, and a model
version's reasoning path and response beside the user's real text, with their scores.

The page opens on the best shipped version and a request whose stored generation it shows at once.
Generating streams token by token; every generation is stored (:mod:`restpg.store.generations`). While a
training job runs on the CPU, a generation uses the cores the job leaves (:mod:`restpg.inference.hardware`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import gradio as gr  # at the top: handlers' gr.Request hints resolve in this module's globals
import pandas as pd

from ..data.longlamp import PUBLIC_TASKS, SPLIT_FAMILIES, SPLITS, LoadedRecords, Record
from ..data.prompts import FIELD_LABELS
from ..data.retrieval import ITEM_TEXT_FIELDS, PAPER_TOP_K, retrieve
from ..errors import PAGE_ERRORS
from ..inference.hardware import page_threads
from ..inference.models import PAPER_INFERENCE_TEMPERATURE
from .explore import SAMPLE_DATASET, settings_note
from .links import page_link

SCORE_COLUMNS = ["version", "generation", "judge", "rouge1", "rougeL", "meteor"]


def profile_table(record: Record, k: int) -> pd.DataFrame:
    """The user's profile, retrieved items first with their rank, then the rest in profile order."""
    ranks = {item.position: rank for rank, item in enumerate(retrieve(record, k), start=1)}
    fields = ITEM_TEXT_FIELDS[record.task]
    rows = []
    for position, item in enumerate(record.profile):
        row = {"retrieved": f"#{ranks[position]}" if position in ranks else "", "item": item.item_id}
        row.update({FIELD_LABELS.get(name, name): str(item.fields.get(name, "")) for name in fields})
        rows.append(row)
    rows.sort(key=lambda r: (r["retrieved"] == "", int(r["retrieved"][1:] or 0)))
    return pd.DataFrame(rows)


def dataset_summary(loaded: LoadedRecords, shown: int = 5) -> str:
    """One line on the dataset, plus the bad records that were skipped."""
    line = (
        f"{Path(loaded.source).name}: {len(loaded.records)} records, {len(loaded.users())} users, "
        f"{loaded.problem_count} bad record(s) skipped"
    )
    problems = [f"- {problem.index}: field {problem.field}: {problem.message}" for problem in loaded.problems[:shown]]
    more = [f"- ... and {loaded.problem_count - shown} more"] if loaded.problem_count > shown else []
    return "\n".join([line, *problems, *more, *(f"note: {note}" for note in loaded.notes)])


def scores_row(version: str, row: dict) -> dict:
    scores = json.loads(row["scores"])
    return {
        "version": version,
        "generation": row["generation_id"],
        **{name: round(scores[name], 4) if name in scores else None for name in SCORE_COLUMNS[2:]},
    }


def explore_tab(parts) -> dict:
    """Builds the Explore tab; returns its page-load handler and the version pickers the Train tab refreshes."""
    service = parts.service

    def on_dataset(dataset, task, family, split, current_user=None, pinned=None):
        try:
            loaded = service.dataset(dataset, task, family, split)
        except PAGE_ERRORS as error:
            return gr.update(choices=[], value=None), f"dataset error: {error}"
        users = loaded.users()
        chosen = current_user if current_user in users else (users[0] if users else None)
        if pinned:  # a ?generation= link: its user, while the page shows its dataset and split
            try:
                row = service.generations.get(pinned)
            except PAGE_ERRORS:
                row = None
            if row and (row["dataset"], row["task"], row["family"], row["split"]) == (dataset, task, family, split):
                chosen = row["user_id"] if row["user_id"] in users else chosen
        return gr.update(choices=users, value=chosen), dataset_summary(loaded)

    def on_upload(file, task, family):
        if file is None:
            return gr.update(), ""
        try:
            name = service.upload(file, Path(file).name, task, family)
        except PAGE_ERRORS as error:
            return gr.update(), f"upload refused: {error}"
        return gr.update(choices=service.dataset_choices(), value=name), f"uploaded as {name}"

    def on_user(dataset, task, family, split, user, pinned=None):
        """The user's requests; the first one, or the one a ``?generation=`` link pinned."""
        if not user:
            return gr.update(choices=[], value=None)
        try:
            records = service.dataset(dataset, task, family, split).for_user(user)
        except PAGE_ERRORS as error:
            raise gr.Error(str(error)) from error
        choices = [(f"{i}: {r.input[:90]}", i) for i, r in enumerate(records)]
        first = 0 if choices else None
        if pinned:
            try:
                row = service.generations.get(pinned)
            except PAGE_ERRORS:
                row = None
            ids = [r.record_id for r in records]
            if row and row["dataset"] == dataset and row["record_id"] in ids:
                first = ids.index(row["record_id"])
        return gr.update(choices=choices, value=first)

    def pinned_row(pinned, dataset, record, version, settings):
        """The generation a ``?generation=`` link pinned, while the page still shows its request,
        version and settings; else None."""
        if not pinned:
            return None
        try:
            row = service.generations.get(pinned)
        except PAGE_ERRORS:
            return None
        same = (
            row["dataset"] == dataset
            and row["record_id"] == record.record_id
            and row["model_version"] == service.version_id(version)
            and json.loads(row["settings"] or "{}") == settings
        )
        return row if same else None

    def on_request(
        dataset, task, family, split, user, request_index, k, tokens, temperature, version_a, version_b, pinned=None
    ):
        """The request, the profile and the real text; and the stored generations for these settings, if any."""
        empty = ("", None, "", "", "", "", "", pd.DataFrame(columns=SCORE_COLUMNS), {}, "", "")
        if user is None or request_index is None:
            return empty
        try:
            record = service.record(dataset, task, family, split, user, int(request_index))
            table = profile_table(record, int(k))
            settings = service.settings_for(int(k), int(tokens or 0) or None, float(temperature))
            shown, rows, notes, support = [], {}, [], ""
            for slot, version in enumerate((version_a, version_b)):
                stored = None
                if version:
                    stored = pinned_row(pinned, dataset, record, version, settings) if slot == 0 else None
                    stored = stored or service.stored(dataset, record, version, settings)
                shown += [stored["reasoning"], stored["response"]] if stored else ["", ""]
                if stored:
                    rows[str(slot)] = scores_row(version, stored)
                    notes.append(
                        f"{version}: stored generation {stored['generation_id']}"
                        f"{settings_note(stored, settings) or ' (Regenerate for a new one)'}"
                    )
                    if slot == 0:
                        support = service.support(stored, record)
        except PAGE_ERRORS as error:
            return (*empty[:-2], f"error: {error}", "")
        return (
            record.input,
            table,
            record.output,
            *shown,
            pd.DataFrame(list(rows.values()), columns=SCORE_COLUMNS),
            rows,
            "\n".join(notes),
            support,
        )

    def streamer(slot: int, regenerate: bool):
        def run(
            dataset,
            task,
            family,
            split,
            user,
            request_index,
            k,
            tokens,
            temperature,
            version_a,
            version_b,
            score_rows,
            stop_state,
        ):
            version = version_a if slot == 0 else version_b
            if user is None or request_index is None or not version:
                raise gr.Error("choose a user, a request and a model version first")
            try:
                record = service.record(dataset, task, family, split, user, int(request_index))
                settings = service.settings_for(int(k), int(tokens or 0) or None, float(temperature))
                # Generate shows a stored generation only if it was made with the settings asked for.
                stored = None if regenerate else service.stored(dataset, record, version, settings, exact=True)
            except PAGE_ERRORS as error:
                raise gr.Error(str(error)) from error
            score_rows = {**score_rows, str(slot): None}  # this slot's old scores go as it regenerates

            def table():
                return pd.DataFrame([row for row in score_rows.values() if row], columns=SCORE_COLUMNS)

            if stored is not None:
                score_rows[str(slot)] = scores_row(version, stored)
                yield (
                    stored["reasoning"],
                    stored["response"],
                    table(),
                    score_rows,
                    f"{version}: stored generation {stored['generation_id']} (Regenerate for a new one)",
                    service.support(stored, record) if slot == 0 else gr.skip(),
                )
                return
            stop = threading.Event()
            stop_state[slot] = stop
            threads = page_threads(job_running=parts.jobs.running_on("cpu"))
            try:
                for update in service.stream(dataset, record, version, settings, family, split, stop, threads):
                    if update.done:
                        score_rows[str(slot)] = scores_row(version, update.row)
                        yield (
                            update.reasoning,
                            update.response,
                            table(),
                            score_rows,
                            f"{version}: generation {update.row['generation_id']}; {update.note}",
                            service.support(update.row, record) if slot == 0 else gr.skip(),
                        )
                    else:
                        yield (
                            update.reasoning,
                            update.response,
                            gr.skip(),
                            gr.skip(),
                            f"{version}: generating...",
                            gr.skip(),
                        )
            except PAGE_ERRORS as error:
                raise gr.Error(str(error)) from error

        return run

    def on_stop(stop_state):
        for event in stop_state.values():
            event.set()
        return "stopping..."

    start = service.demo_start() or {
        "version": service.default_version(),
        "task": PUBLIC_TASKS[0],
        "family": "user",
        "split": "test",
        "user": None,
        "request": 0,
    }
    with gr.Row():
        dataset = gr.Dropdown(
            service.dataset_choices(),
            value=SAMPLE_DATASET,
            label="dataset",
            scale=2,
            allow_custom_value=True,
            elem_id="explore-dataset",
        )  # the service refuses paths outside the data directory
        task = gr.Dropdown(list(PUBLIC_TASKS), value=start["task"], label="task")
        family = gr.Radio(list(SPLIT_FAMILIES), value=start["family"], label="split family")
        split = gr.Dropdown(list(SPLITS), value=start["split"], label="split", elem_id="explore-split")
        upload = gr.File(
            label="upload a LongLaMP file (.json, .jsonl, .parquet)",
            file_types=[".json", ".jsonl", ".parquet"],
            type="filepath",
            scale=2,
        )
    with gr.Row():
        user = gr.Dropdown(
            [],
            value=start["user"],
            label="user (type to search)",
            filterable=True,
            scale=2,
            allow_custom_value=True,
            elem_id="explore-user",
        )  # checked by the service, so scripts can pass any id
        request = gr.Dropdown(
            [], value=start["request"], label="request", scale=3, allow_custom_value=True, elem_id="explore-request"
        )
    dataset_info = gr.Textbox(label="dataset", lines=2, interactive=False)
    with gr.Row():
        versions = list(service.versions())
        version_a = gr.Dropdown(
            versions, value=start["version"], label="model version", elem_id="version-a", allow_custom_value=True
        )
        version_b = gr.Dropdown(
            versions, value=None, label="compare with (optional)", elem_id="version-b", allow_custom_value=True
        )
        k = gr.Slider(1, 10, value=PAPER_TOP_K, step=1, label="k retrieved items (paper: 5)")
        tokens = gr.Number(value=0, precision=0, label="max new tokens (0: 1536 on GPU, 256 on CPU)")
        temperature = gr.Slider(
            0.0, 1.5, value=PAPER_INFERENCE_TEMPERATURE, step=0.05, label="temperature (paper: 0.1; 0 = greedy)"
        )
    version_info = gr.Textbox(
        value=service.describe(start["version"]),
        label="model version",
        lines=2,
        interactive=False,
        elem_id="version-info",
    )
    request_text = gr.Textbox(label="request", lines=3, interactive=False)
    profile = gr.Dataframe(label="profile (retrieved items first, ranked)", wrap=True, interactive=False)
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id="generate")
        regenerate = gr.Button("Regenerate", elem_id="regenerate")
        compare = gr.Button("Generate both (compare)", elem_id="compare")
        stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
    with gr.Row():
        with gr.Column():
            reasoning_a = gr.Textbox(label="reasoning path", lines=12, interactive=False, elem_id="reasoning-a")
            response_a = gr.Textbox(label="response", lines=10, interactive=False, elem_id="response-a")
        with gr.Column():
            reasoning_b = gr.Textbox(label="reasoning path (compared version)", lines=12, interactive=False)
            response_b = gr.Textbox(label="response (compared version)", lines=10, interactive=False)
        real = gr.Textbox(label="the user's real text", lines=23, interactive=False)
    scores = gr.Dataframe(
        pd.DataFrame(columns=SCORE_COLUMNS),
        interactive=False,
        label=f"scores of each response against the real text (judge: {service.judge_name()})",
    )
    support = gr.Textbox(
        label="which retrieved profile items each reasoning sentence draws on (lexical overlap)",
        lines=6,
        interactive=False,
        elem_id="explore-support",
    )
    with gr.Row():
        info = gr.Textbox(label="status", lines=2, interactive=False, elem_id="explore-status", scale=3)
        link = gr.Textbox(label="link to this generation", interactive=False, elem_id="explore-link", scale=2)
    stop_state = gr.State({})
    pinned = gr.State(None)  # the generation a ?generation= link opened
    score_rows = gr.State({})  # slot ("0" = the version, "1" = the compared one) -> its scores row

    selectors = [dataset, task, family, split]
    request_inputs = selectors + [user, request, k, tokens, temperature, version_a, version_b]
    request_outputs = [
        request_text,
        profile,
        real,
        reasoning_a,
        response_a,
        reasoning_b,
        response_b,
        scores,
        score_rows,
        info,
        support,
    ]
    for control in selectors:
        control.change(on_dataset, selectors + [user, pinned], [user, dataset_info], api_visibility="private")
    upload.upload(on_upload, [upload, task, family], [dataset, dataset_info], api_name="upload")
    # A new user's first request has the same index (0) as the old one's: refresh the request view explicitly.
    user.change(on_user, selectors + [user, pinned], request, api_visibility="private").then(
        on_request, request_inputs, request_outputs, api_visibility="private"
    )
    for control in (request, k, version_a, version_b):
        control.change(on_request, request_inputs + [pinned], request_outputs, api_visibility="private")

    def on_scores(rows, request: gr.Request = None):
        """The link that opens the generation on screen (the version's, slot 0) again."""
        shown = (rows or {}).get("0")
        return page_link(request, generation=shown["generation"]) if shown else ""

    score_rows.change(on_scores, score_rows, link, api_visibility="private", show_progress="hidden")

    def on_version(version):
        try:
            return service.describe(version) if version else ""
        except PAGE_ERRORS as error:
            return f"error: {error}"

    version_a.change(on_version, version_a, version_info, api_visibility="private")
    stream_inputs = request_inputs + [score_rows, stop_state]
    model_queue = dict(concurrency_limit=1, concurrency_id="model")
    gen_a = generate.click(
        streamer(0, False),
        stream_inputs,
        [reasoning_a, response_a, scores, score_rows, info, support],
        api_name="generate",
        **model_queue,
    )
    regen_a = regenerate.click(
        streamer(0, True),
        stream_inputs,
        [reasoning_a, response_a, scores, score_rows, info, support],
        api_name="regenerate",
        **model_queue,
    )
    both = compare.click(
        streamer(0, False),
        stream_inputs,
        [reasoning_a, response_a, scores, score_rows, info, support],
        api_name="compare_a",
        **model_queue,
    ).then(
        streamer(1, False),
        stream_inputs,
        [reasoning_b, response_b, scores, score_rows, info, support],
        api_name="compare_b",
        **model_queue,
    )
    stop_button.click(on_stop, stop_state, info, api_name="stop", queue=False)

    def on_load(dataset_name, task_name, family_name, split_name, user_name, request_index, request: gr.Request = None):
        """A fresh page sees the data files and model versions as they are now, and the request it
        opens on with its stored generation; a ``?generation=<id>`` link opens that generation."""
        query = dict(getattr(request, "query_params", None) or {})
        located = None
        if query.get("generation") and not query.get("rate"):
            try:
                located = service.locate(query["generation"])
            except PAGE_ERRORS:
                located = None  # the Rate tab opens instead and says why
        settings = {}
        if located:
            dataset_name, task_name, family_name, split_name = (
                located["dataset"],
                located["task"],
                located["family"],
                located["split"],
            )
            user_name, request_index, settings = located["user"], located["request"], located["settings"]
        users, summary = on_dataset(dataset_name, task_name, family_name, split_name, user_name)
        chosen = users.get("value")
        pinned_id = located["generation_id"] if located else None
        requests = (
            on_user(dataset_name, task_name, family_name, split_name, chosen, pinned_id) if chosen else gr.update()
        )
        if chosen == user_name and request_index is not None:
            requests["value"] = request_index
        linked = [gr.update()] * 7
        if located:
            linked = [
                gr.update(value=task_name),
                gr.update(value=family_name),
                gr.update(value=split_name),
                gr.update(value=located["version"]),
                gr.update(value=settings.get("k", PAPER_TOP_K)),
                gr.update(value=settings.get("max_new_tokens", 0)),
                gr.update(value=settings.get("temperature", PAPER_INFERENCE_TEMPERATURE)),
            ]
        dataset_update = gr.update(choices=service.dataset_choices(), value=dataset_name if located else None)
        if not located:
            dataset_update = gr.update(choices=service.dataset_choices())
        return (dataset_update, users, summary, requests, *linked, located["generation_id"] if located else None)

    load_inputs = selectors + [user, request]
    return dict(
        load=(
            on_load,
            load_inputs,
            [dataset, user, dataset_info, request, task, family, split, version_a, k, tokens, temperature, pinned],
        ),
        show=(on_request, request_inputs + [pinned], request_outputs),
        versions=[version_a, version_b],
        events=[gen_a, regen_a, both],
    )
