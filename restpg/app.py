"""The Gradio app: three tabs (Explore, Rate, Train) over the library.

Callbacks are thin: they turn widget values into calls on :class:`restpg.explore.ExploreService`,
:class:`restpg.ratings.RatingStore` and :class:`restpg.jobs.JobManager` (the same code the CLI
runs), and library errors into messages in the page. Text from datasets and models is only ever
put in text widgets (textboxes, plain-text table cells), never rendered as HTML or Markdown.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .explore import AppPaths, ExploreService, SAMPLE_DATASET, BASE_VERSION
from .jobs import JobError, JobManager
from .longlamp import PUBLIC_TASKS, SPLIT_FAMILIES, SPLITS, DatasetError, LoadedRecords, Record
from .models import PAPER_INFERENCE_TEMPERATURE, ModelConfig, ModelError, PromptTooLongError
from .prompts import FIELD_LABELS
from .ratings import RatingError, RatingStore
from .retrieval import ITEM_TEXT_FIELDS, PAPER_TOP_K, retrieve

# Errors that a page action turns into a message instead of a crash.
PAGE_ERRORS = (DatasetError, ModelError, PromptTooLongError, RatingError, JobError, ValueError, KeyError, OSError)
SCORE_COLUMNS = ["version", "generation", "judge", "rouge1", "rougeL", "meteor"]


@dataclass
class AppParts:
    """What the tabs share: the explore service, the ratings and the background jobs."""

    service: ExploreService
    ratings: RatingStore
    jobs: JobManager


def make_parts(model_config: ModelConfig, paths: AppPaths = AppPaths(), judge_model: str | None = None,
               use_judge: bool = True) -> AppParts:
    service = ExploreService(model_config, paths, judge_model=judge_model, use_judge=use_judge)
    return AppParts(service, RatingStore(service.store), JobManager(paths.runs_dir, service.store))


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
    line = (f"{Path(loaded.source).name}: {len(loaded.records)} records, {len(loaded.users())} users, "
            f"{len(loaded.problems)} bad record(s) skipped")
    problems = [f"- {problem.index}: field {problem.field}: {problem.message}" for problem in loaded.problems[:shown]]
    more = [f"- ... and {len(loaded.problems) - shown} more"] if len(loaded.problems) > shown else []
    return "\n".join([line, *problems, *more])


def scores_row(version: str, row: dict) -> dict:
    scores = json.loads(row["scores"])
    return {"version": version, "generation": row["generation_id"],
            **{name: round(scores[name], 4) if name in scores else None for name in SCORE_COLUMNS[2:]}}


def explore_tab(parts: AppParts) -> dict:
    """Builds the Explore tab; returns its page-load handler and the version pickers the Train tab refreshes."""
    import gradio as gr

    service = parts.service

    def on_dataset(dataset, task, family, split):
        try:
            loaded = service.dataset(dataset, task, family, split)
        except PAGE_ERRORS as error:
            return gr.update(choices=[], value=None), f"dataset error: {error}"
        users = loaded.users()
        return gr.update(choices=users, value=users[0] if users else None), dataset_summary(loaded)

    def on_upload(file, task, family):
        if file is None:
            return gr.update(), ""
        try:
            name = service.upload(file, Path(file).name, task, family)
        except PAGE_ERRORS as error:
            return gr.update(), f"upload refused: {error}"
        return gr.update(choices=service.dataset_choices(), value=name), f"uploaded as {name}"

    def on_user(dataset, task, family, split, user):
        if not user:
            return gr.update(choices=[], value=None)
        try:
            records = service.dataset(dataset, task, family, split).for_user(user)
        except PAGE_ERRORS as error:
            raise gr.Error(str(error)) from error
        choices = [(f"{i}: {r.input[:90]}", i) for i, r in enumerate(records)]
        return gr.update(choices=choices, value=0 if choices else None)

    def on_request(dataset, task, family, split, user, request_index, k, tokens, temperature, version_a, version_b):
        """The request, the profile and the real text; and the stored generations for these settings, if any."""
        if user is None or request_index is None:
            return ("", None, "", "", "", "", "", pd.DataFrame(columns=SCORE_COLUMNS), {}, "")
        try:
            record = service.record(dataset, task, family, split, user, int(request_index))
            table = profile_table(record, int(k))
            settings = service.settings_for(int(k), int(tokens or 0) or None, float(temperature))
            shown, rows, notes = [], {}, []
            for slot, version in enumerate((version_a, version_b)):
                stored = service.stored(dataset, record, version, settings) if version else None
                shown += [stored["reasoning"], stored["response"]] if stored else ["", ""]
                if stored:
                    rows[str(slot)] = scores_row(version, stored)
                    notes.append(f"{version}: stored generation {stored['generation_id']} (Regenerate for a new one)")
        except PAGE_ERRORS as error:
            return ("", None, "", "", "", "", "", pd.DataFrame(columns=SCORE_COLUMNS), {}, f"error: {error}")
        return (record.input, table, record.output, *shown, pd.DataFrame(list(rows.values()), columns=SCORE_COLUMNS),
                rows, "\n".join(notes))

    def streamer(slot: int, regenerate: bool):
        def run(dataset, task, family, split, user, request_index, k, tokens, temperature, version_a, version_b,
                score_rows, stop_state):
            version = version_a if slot == 0 else version_b
            if user is None or request_index is None or not version:
                raise gr.Error("choose a user, a request and a model version first")
            try:
                record = service.record(dataset, task, family, split, user, int(request_index))
                settings = service.settings_for(int(k), int(tokens or 0) or None, float(temperature))
                stored = None if regenerate else service.stored(dataset, record, version, settings)
            except PAGE_ERRORS as error:
                raise gr.Error(str(error)) from error
            score_rows = {**score_rows, str(slot): None}  # this slot's old scores go as it regenerates

            def table():
                return pd.DataFrame([row for row in score_rows.values() if row], columns=SCORE_COLUMNS)

            if stored is not None:
                score_rows[str(slot)] = scores_row(version, stored)
                yield (stored["reasoning"], stored["response"], table(), score_rows,
                       f"{version}: stored generation {stored['generation_id']} (Regenerate for a new one)")
                return
            stop = threading.Event()
            stop_state[slot] = stop
            try:
                for update in service.stream(dataset, record, version, settings, family, split, stop):
                    if update.done:
                        score_rows[str(slot)] = scores_row(version, update.row)
                        yield (update.reasoning, update.response, table(), score_rows,
                               f"{version}: generation {update.row['generation_id']}; {update.note}")
                    else:
                        yield update.reasoning, update.response, gr.skip(), gr.skip(), f"{version}: generating..."
            except PAGE_ERRORS as error:
                raise gr.Error(str(error)) from error
        return run

    def on_stop(stop_state):
        for event in stop_state.values():
            event.set()
        return "stopping..."

    with gr.Row():
        dataset = gr.Dropdown(service.dataset_choices(), value=SAMPLE_DATASET, label="dataset", scale=2,
                              allow_custom_value=True, elem_id="explore-dataset")  # the service refuses paths outside the data directory
        task = gr.Dropdown(list(PUBLIC_TASKS), value=PUBLIC_TASKS[0], label="task")
        family = gr.Radio(list(SPLIT_FAMILIES), value="user", label="split family")
        split = gr.Dropdown(list(SPLITS), value="train", label="split")
        upload = gr.File(label="upload a LongLaMP file (.json, .jsonl, .parquet)", file_types=[".json", ".jsonl", ".parquet"],
                         type="filepath", scale=2)
    with gr.Row():
        user = gr.Dropdown([], label="user (type to search)", filterable=True, scale=2,
                           allow_custom_value=True)  # checked by the service, so scripts can pass any id
        request = gr.Dropdown([], label="request", scale=3, allow_custom_value=True)
    dataset_info = gr.Textbox(label="dataset", lines=2, interactive=False)
    with gr.Row():
        versions = list(service.versions())
        version_a = gr.Dropdown(versions, value=BASE_VERSION, label="model version", elem_id="version-a",
                                allow_custom_value=True)
        version_b = gr.Dropdown(versions, value=None, label="compare with (optional)", elem_id="version-b",
                                allow_custom_value=True)
        k = gr.Slider(1, 10, value=PAPER_TOP_K, step=1, label="k retrieved items (paper: 5)")
        tokens = gr.Number(value=0, precision=0, label="max new tokens (0: 1536 on GPU, 256 on CPU)")
        temperature = gr.Slider(0.0, 1.5, value=PAPER_INFERENCE_TEMPERATURE, step=0.05,
                                label="temperature (paper: 0.1; 0 = greedy)")
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
    scores = gr.Dataframe(pd.DataFrame(columns=SCORE_COLUMNS), interactive=False,
                          label=f"scores of each response against the real text (judge: {service.judge_name()})")
    info = gr.Textbox(label="status", lines=2, interactive=False, elem_id="explore-status")
    stop_state = gr.State({})
    score_rows = gr.State({})  # slot ("0" = the version, "1" = the compared one) -> its scores row

    selectors = [dataset, task, family, split]
    request_inputs = selectors + [user, request, k, tokens, temperature, version_a, version_b]
    request_outputs = [request_text, profile, real, reasoning_a, response_a, reasoning_b, response_b, scores,
                       score_rows, info]
    for control in selectors:
        control.change(on_dataset, selectors, [user, dataset_info], api_visibility="private")
    upload.upload(on_upload, [upload, task, family], [dataset, dataset_info], api_name="upload")
    # A new user's first request has the same index (0) as the old one's: refresh the request view explicitly.
    user.change(on_user, selectors + [user], request, api_visibility="private").then(
        on_request, request_inputs, request_outputs, api_visibility="private")
    for control in (request, k, version_a, version_b):
        control.change(on_request, request_inputs, request_outputs, api_visibility="private")
    stream_inputs = request_inputs + [score_rows, stop_state]
    model_queue = dict(concurrency_limit=1, concurrency_id="model")
    gen_a = generate.click(streamer(0, False), stream_inputs, [reasoning_a, response_a, scores, score_rows, info],
                           api_name="generate", **model_queue)
    regen_a = regenerate.click(streamer(0, True), stream_inputs, [reasoning_a, response_a, scores, score_rows, info],
                               api_name="regenerate", **model_queue)
    both = compare.click(streamer(0, False), stream_inputs, [reasoning_a, response_a, scores, score_rows, info],
                         api_name="compare_a", **model_queue).then(
        streamer(1, False), stream_inputs, [reasoning_b, response_b, scores, score_rows, info], api_name="compare_b", **model_queue)
    stop_button.click(on_stop, stop_state, info, api_name="stop", queue=False)
    def on_load(dataset_name, task_name, family_name, split_name):
        """A fresh page sees the data files and model versions as they are now."""
        return (gr.update(choices=service.dataset_choices()), *on_dataset(dataset_name, task_name, family_name, split_name))

    return dict(load=(on_load, selectors, [dataset, user, dataset_info]), versions=[version_a, version_b],
                events=[gen_a, regen_a, both])


def build_app(parts: AppParts):
    import gradio as gr

    from .rate_tab import rate_tab
    from .train_tab import train_tab

    with gr.Blocks(title="restpg: REST-PG explorer", analytics_enabled=False) as demo:
        gr.Markdown("# restpg: reasoning over a user's profile before writing\n"
                    "**Explore** a LongLaMP user's profile and the model's reasoning path and response beside "
                    "the real text; **Rate** reasoning paths; **Train** REST-PG rounds in the background.")
        with gr.Tabs():
            with gr.Tab("Explore", id="explore"):
                explore = explore_tab(parts)
            with gr.Tab("Rate", id="rate", elem_id="rate-panel"):
                rate_load = rate_tab(parts)
            with gr.Tab("Train", id="train"):
                train_load = train_tab(parts, explore["versions"])
        demo.load(*explore["load"], api_visibility="private")
        for handler, inputs, outputs in (rate_load, train_load):
            demo.load(handler, inputs, outputs, api_visibility="private")
    return demo


def launch(parts: AppParts, host: str = "127.0.0.1", port: int = 7860, auth: tuple[str, str] | None = None,
           **kwargs):
    """Start the page: a queue so one slow generation never blocks the other users' clicks."""
    from importlib.resources import files

    import gradio as gr

    demo = build_app(parts)
    keys_js = files("restpg").joinpath("rate_keys.js").read_text()
    css = ".rate-active { outline: 3px solid var(--color-accent); border-radius: 6px; }"
    demo.queue(default_concurrency_limit=8)
    return demo.launch(server_name=host, server_port=port, auth=auth, js=keys_js, css=css,
                       allowed_paths=[str(parts.service.paths.runs_dir / "exports")], theme=gr.themes.Default(),
                       max_file_size="200mb", show_error=True, **kwargs)
