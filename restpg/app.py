"""The Gradio app's library side: the explore view (dataset -> user -> request -> generation).

UI callbacks are thin: they call :class:`ExploreService`, which calls the same library functions
as the CLI (``load_records``, ``retrieve``, ``personalize``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .longlamp import PUBLIC_TASKS, SPLIT_FAMILIES, SPLITS, DatasetError, LoadedRecords, Record, load_records, sample_path
from .models import (DEFAULT_MODEL, PAPER_INFERENCE_TEMPERATURE, GenerationSettings, LoadedModel, ModelConfig,
                     default_max_new_tokens, load_model)
from .prompts import FIELD_LABELS
from .retrieval import ITEM_TEXT_FIELDS, PAPER_TOP_K, retrieve


@dataclass
class ExploreService:
    """Holds what the page shares between requests: the loaded model, metrics and datasets."""

    model_config: ModelConfig = field(default_factory=ModelConfig)
    _model: LoadedModel | None = field(default=None, init=False)
    _metrics: object | None = field(default=None, init=False)
    _datasets: dict[tuple[str, str, str], LoadedRecords] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    # -- data ------------------------------------------------------------------------------
    def dataset(self, task: str, family: str, split: str) -> LoadedRecords:
        key = (task, family, split)
        if key not in self._datasets:
            # Lenient: bad records are reported in the page and the good ones kept.
            self._datasets[key] = load_records(sample_path(task, family, split), task, family, split, strict=False)
        return self._datasets[key]

    def users(self, task: str, family: str, split: str) -> list[str]:
        return self.dataset(task, family, split).users()

    def records(self, task: str, family: str, split: str, user: str) -> list[Record]:
        return self.dataset(task, family, split).for_user(user)

    def record(self, task: str, family: str, split: str, user: str, request_index: int) -> Record:
        records = self.records(task, family, split, user)
        if not 0 <= request_index < len(records):
            raise DatasetError(f"user {user!r} has no request {request_index}")
        return records[request_index]

    # -- model -----------------------------------------------------------------------------
    def model(self) -> LoadedModel:
        with self._lock:
            if self._model is None:
                self._model = load_model(self.model_config)
            return self._model

    def metrics(self):
        from .metrics import LexicalMetrics

        with self._lock:
            if self._metrics is None:
                self._metrics = LexicalMetrics()
            return self._metrics

    def generate(self, record: Record, k: int, max_new_tokens: int | None, temperature: float):
        from .personalize import personalize

        loaded = self.model()
        settings = GenerationSettings(max_new_tokens=max_new_tokens or default_max_new_tokens(loaded.device),
                                      temperature=temperature)
        return personalize(loaded, [record], self.metrics(), k=k, generation=settings)[0]


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
    """One line on the dataset, plus the bad records that were skipped (as text, never as HTML)."""
    line = (f"`{Path(loaded.source).name}`: {len(loaded.records)} records, {len(loaded.users())} users, "
            f"{len(loaded.problems)} bad record(s) skipped")
    problems = [f"- {problem.index}: field {problem.field}: {problem.message}" for problem in loaded.problems[:shown]]
    return "\n".join([line, *problems])


def build_app(service: ExploreService):
    import gradio as gr

    def on_task(task, family, split):
        try:
            loaded = service.dataset(task, family, split)
        except DatasetError as error:
            return gr.update(choices=[], value=None), f"**dataset error:** {error}"
        users = loaded.users()
        summary = dataset_summary(loaded)
        return gr.update(choices=users, value=users[0] if users else None), summary

    def on_user(task, family, split, user):
        if not user:
            return gr.update(choices=[], value=None)
        records = service.records(task, family, split, user)
        choices = [(f"{i}: {r.input[:90]}", i) for i, r in enumerate(records)]
        return gr.update(choices=choices, value=0 if choices else None)

    def on_request(task, family, split, user, request_index, k):
        if user is None or request_index is None:
            return "", None, ""
        record = service.record(task, family, split, user, int(request_index))
        return record.input, profile_table(record, int(k)), record.output

    def on_generate(task, family, split, user, request_index, k, max_new_tokens, temperature):
        if user is None or request_index is None:
            raise gr.Error("choose a user and a request first")
        try:
            record = service.record(task, family, split, user, int(request_index))
            out = service.generate(record, int(k), int(max_new_tokens) or None, float(temperature))
        except (ValueError, RuntimeError) as error:
            raise gr.Error(str(error)) from error
        scores = pd.DataFrame([{name: round(value, 4) for name, value in out.scores.items()}])
        notes = "; ".join(out.parsed.problems)
        info = (f"{out.generation.new_tokens} new tokens"
                f"{' (cut at the limit)' if out.generation.truncated else ''}"
                f"{' | parse: ' + notes if notes else ''} | {service.metrics().variant}")
        return out.parsed.reasoning, out.parsed.response, scores, info

    with gr.Blocks(title="restpg: REST-PG explorer") as demo:
        gr.Markdown("# restpg: reasoning over a user's profile before writing\n"
                    "Pick a LongLaMP task and user; **Generate** shows the model's reasoning path and "
                    "response beside the user's real text.")
        with gr.Row():
            task = gr.Dropdown(list(PUBLIC_TASKS), value=PUBLIC_TASKS[0], label="task")
            family = gr.Radio(list(SPLIT_FAMILIES), value="user", label="split family")
            split = gr.Dropdown(list(SPLITS), value="train", label="split")
            user = gr.Dropdown([], label="user (type to search)", filterable=True, allow_custom_value=True)
            request = gr.Dropdown([], label="request", allow_custom_value=True)
        dataset_info = gr.Markdown()
        with gr.Row():
            k = gr.Slider(1, 10, value=PAPER_TOP_K, step=1, label="k retrieved items (paper: 5)")
            max_new_tokens = gr.Number(value=0, precision=0,
                                       label="max new tokens (0: 1536 on GPU, 256 on CPU)")
            temperature = gr.Slider(0.0, 1.5, value=PAPER_INFERENCE_TEMPERATURE, step=0.05,
                                    label="temperature (paper: 0.1; 0 = greedy)")
        request_text = gr.Textbox(label="request", lines=3, interactive=False)
        profile = gr.Dataframe(label="profile (retrieved items first, ranked)", wrap=True, interactive=False)
        generate_button = gr.Button("Generate", variant="primary")
        with gr.Row():
            reasoning = gr.Textbox(label="reasoning path", lines=14, interactive=False)
            response = gr.Textbox(label="response", lines=14, interactive=False)
            real = gr.Textbox(label="the user's real text", lines=14, interactive=False)
        scores = gr.Dataframe(pd.DataFrame(columns=["rouge1", "rougeL", "meteor"]), interactive=False,
                              label="scores of the response against the real text")
        info = gr.Markdown()

        selectors = [task, family, split]
        for control in selectors:
            control.change(on_task, selectors, [user, dataset_info], api_name=False)
        user.change(on_user, selectors + [user], request, api_name=False)
        for control in (request, k):
            control.change(on_request, selectors + [user, request, k], [request_text, profile, real],
                           api_name=False)
        generate_button.click(on_generate, selectors + [user, request, k, max_new_tokens, temperature],
                              [reasoning, response, scores, info], concurrency_limit=1,
                              api_name="generate")
        demo.load(on_task, selectors, [user, dataset_info], api_name=False)
    return demo


def default_service(model: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto",
                    cache_dir: Path | None = None) -> ExploreService:
    return ExploreService(ModelConfig(model=model, device=device, dtype=dtype, cache_dir=cache_dir))
