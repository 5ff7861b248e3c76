"""The app's explore side, without any UI: datasets under the data directory (and uploads), model
versions (base + every finished adapter under the runs directory), and streamed, stored,
scored generations.

The Gradio callbacks in :mod:`restpg.app.page` call these methods and nothing else; the methods call the
same library functions as the CLI (``load_records``, ``retrieve``, ``build_prompt``, the metrics).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..data.longlamp import PUBLIC_TASKS, SAMPLE_DATASET, DatasetError, LoadedRecords, Record, load_records, sample_path
from ..data.prompts import PromptSettings, answer_of
from ..data.support import format_report, report_for_record
from ..errors import PAGE_ERRORS, InputError
from ..evaluation.evaluate import predict, prompt_for, score_predictions
from ..inference.hardware import pick_device, set_threads
from ..inference.models import (
    GenerationSettings,
    LoadedModel,
    ModelConfig,
    ModelError,
    default_max_new_tokens,
    load_adapter,
    load_model,
    prompt_token_counter,
    stream_generate,
    use_adapter,
)
from ..runs import GENERATIONS, MANIFEST, RunFolder
from ..store.database import Store
from ..store.generations import GenerationKey, GenerationStore
from ..store.samples import import_runs
from ..training.versions import BASE_VERSION, SHIPPED_DIR, ModelVersion, best_shipped, find_versions
from .jobs import JobError, safe_child

UPLOAD_FOLDER = "uploads"
DATA_SUFFIXES = (".json", ".jsonl", ".parquet")
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
# The parsed datasets the page keeps, by their files' sizes: the sample's are kilobytes; a few large
# uploads are dropped (least recently used first) and parsed again when asked for.
DATASET_CACHE_BYTES = 256 * 1024 * 1024
STREAM_INTERVAL_S = 0.25  # at most four page updates a second while a generation streams  # beside each shipped run: its stored generations for the demo


@dataclass(frozen=True)
class AppPaths:
    """The only places the page reads datasets from and writes to (and the shipped versions it reads)."""

    data_dir: Path = Path("data")
    runs_dir: Path = Path("runs")
    shipped_dir: Path = SHIPPED_DIR

    @property
    def store(self) -> Path:
        return self.runs_dir / "restpg.db"

    @property
    def uploads(self) -> Path:
        return self.data_dir / UPLOAD_FOLDER


@dataclass(frozen=True)
class StreamUpdate:
    """What the page shows while a generation streams and once it is done."""

    reasoning: str
    response: str
    done: bool
    row: dict | None = None  # the stored generation, once done
    note: str = ""


@dataclass
class ExploreService:
    model_config: ModelConfig = field(default_factory=ModelConfig)
    paths: AppPaths = field(default_factory=AppPaths)
    judge_model: str | None = None  # None: the base model (a weak judge: said in the page)
    use_judge: bool = True
    _model: LoadedModel | None = field(default=None, init=False)
    _judge: object | None = field(default=None, init=False)
    _metrics: object | None = field(default=None, init=False)
    # parsed datasets, least recently used first, with their files' sizes (DATASET_CACHE_BYTES)
    _datasets: OrderedDict = field(default_factory=OrderedDict, init=False)
    _parsing: threading.Lock = field(default_factory=threading.Lock, init=False)  # one dataset parse at a time
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False)  # short sections only
    # Held for a whole streamed generation; a plain Lock because Gradio may resume a generator on
    # another thread, and an RLock can only be released by the thread that took it.
    _generating: threading.Lock = field(default_factory=threading.Lock, init=False)
    # Every model call (load, adapter switch, generation, judge) runs on this one thread: bf16 decoding
    # on a CPU ran about 20% slower once torch had run on several threads of the process, as a web
    # server's worker threads would make it (bench/demo_bench.py).
    _torch: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "restpg-torch"), init=False)
    _on_torch_thread: threading.local = field(default_factory=threading.local, init=False)
    # run folder -> the files its samples were last imported from (restpg.store.samples.import_runs): the
    # Rate tab's every list load re-reads only runs that have changed since
    _imported_runs: dict = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.store = Store(self.paths.store)
        self.generations = GenerationStore(self.store)
        for path in sorted(Path(self.paths.shipped_dir).glob(f"*/{GENERATIONS}")):
            if self._ours(RunFolder(path.parent).manifest):  # versions of another base model are not shown either
                self.generations.import_jsonl(path)  # the shipped versions' outputs, once (ids are kept)

    # -- datasets --------------------------------------------------------------------------
    def dataset_choices(self) -> list[str]:
        """The shipped sample, then every data file under the data directory (uploads included)."""
        root = self.paths.data_dir.resolve()
        files = sorted(
            str(path.relative_to(root))
            for path in root.rglob("*")
            if path.suffix in DATA_SUFFIXES
            and path.is_file()
            and path.resolve().is_relative_to(root)
            and path.relative_to(root).parts[0] not in ("longlamp_sample", "source")
        )
        return [SAMPLE_DATASET, *files]

    def dataset_path(self, dataset: str, task: str, family: str, split: str) -> Path:
        if dataset == SAMPLE_DATASET:
            return sample_path(task, family, split)
        try:
            path = safe_child(self.paths.data_dir, dataset)
        except JobError as error:
            raise DatasetError(str(error)) from None
        if not path.is_file() or path.suffix not in DATA_SUFFIXES:
            raise DatasetError(
                f"{dataset}: no such data file under {self.paths.data_dir} (one of {', '.join(DATA_SUFFIXES)})"
            )
        return path

    def dataset(self, dataset: str, task: str, family: str, split: str) -> LoadedRecords:
        path = self.dataset_path(dataset, task, family, split)
        size = path.stat()
        key = (str(path), task, family, split, size.st_mtime_ns)
        with self._lock:
            if key in self._datasets:
                self._datasets.move_to_end(key)
                return self._datasets[key][0]
        # Lenient: bad records are listed in the page and the good ones kept. Parsed outside the
        # short lock; one parse at a time (_parsing), so several large files never parse at once.
        with self._parsing:
            with self._lock:
                if key in self._datasets:
                    return self._datasets[key][0]
            loaded = load_records(path, task, family, split, strict=False)
            with self._lock:
                self._datasets[key] = (loaded, size.st_size)
                # least recently used first out, while the cached files' bytes exceed the budget
                while len(self._datasets) > 1 and sum(b for _, b in self._datasets.values()) > DATASET_CACHE_BYTES:
                    self._datasets.popitem(last=False)
            return loaded

    def upload(self, temp_file: str | Path, original_name: str, task: str, family: str) -> str:
        """Validate an uploaded file and keep it under ``data/uploads``; returns its dataset name.

        The file is named by its content, ``<name>-<first 10 hex of its sha256><suffix>``: two people
        uploading different files under one name each keep their own, the same file uploaded twice is
        one file. It is written to a temporary file of its own and renamed into place (atomic)."""
        temp_file = Path(temp_file)
        name = Path(str(original_name)).name
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "upload"
        suffix = Path(stem).suffix
        if suffix not in DATA_SUFFIXES:
            raise DatasetError(f"{name[:120]}: not a dataset file (expected {', '.join(DATA_SUFFIXES)})")
        stem = Path(stem).stem[:80] or "upload"
        try:
            if temp_file.stat().st_size > MAX_UPLOAD_BYTES:
                raise DatasetError(f"{name[:120]}: over the {MAX_UPLOAD_BYTES // 2**20} MiB upload limit")
            self.paths.uploads.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            fd, staged = tempfile.mkstemp(dir=self.paths.uploads, prefix=".upload-", suffix=suffix)
            try:
                with os.fdopen(fd, "wb") as out, temp_file.open("rb") as source:
                    for block in iter(lambda: source.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
                with self._parsing:  # one upload parsed at a time: memory never multiplies
                    try:
                        load_records(staged, task, family, strict=False)  # no usable record raises, naming the file
                    except DatasetError as error:  # name the file the user chose, not the temporary copy
                        raise DatasetError(str(error).replace(str(staged), name[:120])) from None
                target = safe_child(self.paths.uploads, f"{stem}-{digest.hexdigest()[:10]}{suffix}")
                os.replace(staged, target)
            finally:
                Path(staged).unlink(missing_ok=True)
        except OSError as error:
            raise DatasetError(f"{name[:120]}: the upload could not be stored ({error.strerror or error})") from None
        return str(target.resolve().relative_to(self.paths.data_dir.resolve()))

    def record(self, dataset: str, task: str, family: str, split: str, user: str, request_index: int) -> Record:
        records = self.dataset(dataset, task, family, split).for_user(user)
        if not records:
            raise DatasetError(f"user {user!r} has no records in {dataset} ({task}, {split})")
        if not 0 <= request_index < len(records):
            raise DatasetError(f"user {user!r} has no request {request_index} (they have {len(records)})")
        return records[request_index]  # the loader already skipped records with an empty profile

    # -- models ----------------------------------------------------------------------------
    def versions(self) -> dict[str, ModelVersion]:
        """Model versions for the picker: base, the shipped ones, every finished adapter under runs/."""
        from ..training.em import PRESETS, default_preset

        base_item_words = PRESETS[default_preset()].max_item_words  # the prompt the shipped versions read
        return find_versions(self.paths.runs_dir, self.model_config.model, base_item_words, self.paths.shipped_dir)

    def version(self, label: str) -> ModelVersion:
        versions = self.versions()
        if label not in versions:
            raise ModelError(f"unknown model version {label!r}; known: {', '.join(versions)}")
        return versions[label]

    def default_version(self) -> str:
        """The version the page opens on: the best shipped one on held-out ROUGE-L, else base."""
        return best_shipped(self.versions())

    def demo_start(self) -> dict | None:
        """Where the page opens: the first test (else validation) request of the sample whose stored
        generation by the default version has both a reasoning path and a response; None when the
        store has none (the page then opens on the first request)."""
        version = self.default_version()
        rows = [
            row
            for row in self.generations.list(dataset=SAMPLE_DATASET, model_version=self.version_id(version))
            if row["reasoning"].strip() and row["response"].strip() and row["split"] in ("test", "val")
        ]
        if not rows:
            return None
        order = {task: n for n, task in enumerate(PUBLIC_TASKS)}
        row = min(rows, key=lambda r: (r["split"] != "test", order.get(r["task"], 99), r["created"]))
        records = self.dataset(SAMPLE_DATASET, row["task"], row["family"], row["split"]).for_user(row["user_id"])
        ids = [r.record_id for r in records]
        if row["record_id"] not in ids:
            return None
        return {
            "version": version,
            "task": row["task"],
            "family": row["family"],
            "split": row["split"],
            "user": row["user_id"],
            "request": ids.index(row["record_id"]),
        }

    def locate(self, generation_id: str) -> dict | None:
        """Where a stored generation sits in the Explore tab (as :meth:`demo_start` gives it, plus
        its settings); None when its dataset, record or version is not one the tab can open (an
        E-step sample, a deleted upload). An unknown id raises UnknownGenerationError."""
        row = self.generations.get(generation_id)
        if row.get("sample_status"):
            return None
        labels = [label for label in self.versions() if self.version_id(label) == row["model_version"]]
        try:
            records = self.dataset(row["dataset"], row["task"], row["family"], row["split"]).for_user(row["user_id"])
        except PAGE_ERRORS:
            return None
        ids = [r.record_id for r in records]
        if not labels or row["record_id"] not in ids:
            return None
        return {
            "dataset": row["dataset"],
            "version": labels[0],
            "task": row["task"],
            "family": row["family"],
            "split": row["split"],
            "user": row["user_id"],
            "request": ids.index(row["record_id"]),
            "settings": json.loads(row["settings"] or "{}"),
            "generation_id": generation_id,
        }

    def record_of(self, row: dict) -> Record | None:
        """The dataset record a stored generation (or E-step sample) was made for; None when its
        dataset cannot be read here."""
        try:
            loaded = self.dataset(row["dataset"], row["task"], row["family"], row["split"])
        except PAGE_ERRORS:
            return None
        return next((r for r in loaded.records if r.record_id == row["record_id"]), None)

    def support(self, row: dict, record: Record | None = None) -> str:
        """Which retrieved profile items each sentence of the row's reasoning draws on, as plain
        text (restpg.data.support), and whether the reasoning seems to copy the real text."""
        if not (row.get("reasoning") or "").strip():
            return "no reasoning path in this output"
        record = record or self.record_of(row)
        if record is None:
            return f"the profile of record {row['record_id']} is not readable here (dataset {row['dataset']!r})"
        retrieved = json.loads(row.get("retrieved_ids") or "[]")
        return format_report(report_for_record(row["reasoning"], record, retrieved, row.get("reference")))

    def import_samples(self) -> list[str]:
        """Store the E-step samples of every run under the runs folder and of the shipped runs of
        this base model (restpg.store.samples; new ones only, and only from runs whose files changed since
        the last call); returns the folders that could not be read."""
        roots = [self.paths.runs_dir] + [
            path.parent for path in sorted(Path(self.paths.shipped_dir).glob(f"*/{MANIFEST}")) if self._ours(path)
        ]
        _, problems = import_runs(self.generations, roots, self._imported_runs)
        return problems

    def _ours(self, manifest: Path) -> bool:
        """The run was trained on this page's base model."""
        try:
            return json.loads(manifest.read_text()).get("config", {}).get("model") == self.model_config.model
        except (OSError, json.JSONDecodeError):
            return False

    def describe(self, label: str) -> str:
        """One paragraph on a version for the page: what it is, its prompt, who wrote its reasoning data,
        its held-out scores."""
        version = self.version(label)
        if version.adapter is None:
            return (
                f"{label}: {self.model_config.model} without any training (it has not learned the "
                "reasoning-then-answer format, so it often never reaches a final answer)"
            )
        parts = [
            f"{label}: LoRA adapter {version.adapter.parent.parent.name}/{version.step}",
            "reasons first, then answers" if version.prompt_kind == "reasoning" else "answers directly (no reasoning)",
            f"profile items cut to {version.max_item_words} words" if version.max_item_words else "whole profile items",
        ]
        if version.reasoning_by:
            parts.append(f"stage-1 reasoning by: {version.reasoning_by}")
        if version.held_out:
            shown = ", ".join(
                f"{name} {version.held_out[name]:.3f}"
                for name in ("rougeL", "meteor", "judge")
                if name in version.held_out
            )
            answered = 1 - version.held_out.get("empty_answers", 0.0)
            parts.append(f"held-out: {shown}, final answer in {answered:.0%}")
        return "; ".join(parts)

    def on_torch(self, function, *args):
        """``function(*args)`` on the service's model thread (directly when already on it)."""
        if getattr(self._on_torch_thread, "inside", False):
            return function(*args)

        def call():
            self._on_torch_thread.inside = True
            return function(*args)

        return self._torch.submit(call).result()

    def model(self) -> LoadedModel:
        with self._lock:
            if self._model is None:
                self._model = self.on_torch(load_model, self.model_config)
                self._model.stream_worker = self._torch  # streamed generations run there too
            return self._model

    def activate(self, label: str) -> LoadedModel:
        """The model with version ``label``'s adapter active (attached once, then switched)."""
        adapter = self.version(label).adapter
        loaded = self.model()

        def switch():
            if adapter is None:
                use_adapter(loaded, None)
                return
            name = next((n for n, path in loaded.adapters.items() if path == adapter), None)
            if name is None:
                name = load_adapter(loaded, adapter, re.sub(r"\W", "_", label) + f"_{len(loaded.adapters)}")
            use_adapter(loaded, name)

        self.on_torch(switch)
        return loaded

    def version_id(self, version: str) -> str:
        return self.model_config.model if version == BASE_VERSION else f"{self.model_config.model} + {version}"

    def metrics(self):
        from ..evaluation.metrics import LexicalMetrics

        with self._lock:
            if self._metrics is None:
                self._metrics = LexicalMetrics()
            return self._metrics

    def judge(self):
        from ..evaluation.reward import LLMJudge

        with self._lock:
            if self._judge is None:
                judge_config = ModelConfig(
                    model=self.judge_model or self.model_config.model,
                    device=self.model_config.device,
                    dtype=self.model_config.dtype,
                    cache_dir=self.model_config.cache_dir,
                )
                self._judge = LLMJudge(
                    self.on_torch(load_model, judge_config), cache_file=self.paths.runs_dir / "app_judge_cache.jsonl"
                )
            return self._judge

    def judge_name(self) -> str:
        name = self.judge_model or self.model_config.model
        return name + (" (the base model: a weak judge)" if self.judge_model in (None, self.model_config.model) else "")

    # -- generation ------------------------------------------------------------------------
    def settings_for(self, k: int, max_new_tokens: int | None, temperature: float) -> dict:
        if not 1 <= k <= 20:
            raise InputError(f"k must be between 1 and 20 (got {k})")
        if not 0.0 <= temperature <= 2.0:
            raise InputError(f"temperature must be between 0 and 2 (got {temperature})")
        tokens = max_new_tokens or default_max_new_tokens(pick_device(self.model_config.device))  # no model load
        if not 1 <= tokens <= 4096:
            raise InputError(f"max new tokens must be between 1 and 4096 (got {tokens})")
        return {"k": k, "max_new_tokens": tokens, "temperature": temperature}

    def key(self, dataset: str, record: Record, version: str, settings: dict) -> GenerationKey:
        return GenerationKey.of(dataset, record.record_id, self.version_id(version), **settings)

    def stored(self, dataset: str, record: Record, version: str, settings: dict, exact: bool = False) -> dict | None:
        """The newest stored generation for these settings; unless ``exact``, else the newest for the
        record and version with any settings (its own settings are in the row: :func:`settings_note`
        says when they differ), so stored work shows at once."""
        key = self.key(dataset, record, version, settings)
        found = self.generations.latest(key)
        if found or exact:
            return found
        return self.generations.latest_for(dataset, record.record_id, key.model_version)

    @staticmethod
    def generation_settings(version: ModelVersion, settings: dict, seed: int | None) -> GenerationSettings:
        """The page's settings, with the prompt budget ``version`` was trained with (else the paper's)."""
        budget = {"max_input_tokens": version.max_input_tokens} if version.max_input_tokens else {}
        return GenerationSettings(
            max_new_tokens=settings["max_new_tokens"], temperature=settings["temperature"], seed=seed, **budget
        )

    def prompt(self, record: Record, version: ModelVersion, k: int, tokenizer, budget: int):
        """The retrieved items and the prompt ``version`` was trained to read, within ``budget`` tokens
        of ``tokenizer`` (the model's; no model needs to be loaded)."""
        return prompt_for(
            record,
            version.prompt_kind,
            k,
            PromptSettings(max_item_words=version.max_item_words),
            prompt_token_counter(tokenizer),
            budget,
        )

    def stream(
        self,
        dataset: str,
        record: Record,
        version: str,
        settings: dict,
        family: str = "",
        split: str = "",
        stop: threading.Event | None = None,
        threads: int | None = None,
    ) -> Iterator[StreamUpdate]:
        """Generate reasoning + response token by token, then score and store it.

        ``threads``: torch threads for this generation (the page passes fewer while a CPU job runs).
        """
        described = self.version(version)
        generation_settings = self.generation_settings(described, settings, seed=None)
        with self._generating:  # one generation at a time on the shared model
            loaded = self.activate(version)
            retrieved, prompt = self.prompt(
                record, described, settings["k"], loaded.tokenizer, generation_settings.max_input_tokens
            )
            self.on_torch(set_threads, threads)  # torch's thread count is per thread: set it where the model runs
            final, shown_at = None, 0.0
            for final in stream_generate(loaded, prompt, generation_settings, stop):
                if time.perf_counter() - shown_at < STREAM_INTERVAL_S:
                    continue  # the page redraws a few times a second; each redraw costs the CPU the model runs on
                shown_at = time.perf_counter()
                # Unfinished text: before the transition phrase, all of it is reasoning so far.
                parsed = answer_of(described.prompt_kind, final.text, truncated=True)
                yield StreamUpdate(parsed.reasoning, parsed.response, done=False)
        parsed = answer_of(described.prompt_kind, final.text, final.truncated)
        row = self._save(dataset, record, version, settings, prompt, retrieved, final, parsed, family, split)
        notes = [f"{final.new_tokens} new tokens"]
        if final.stopped:
            notes.append("stopped by you")
        elif final.truncated:
            notes.append("cut at the token limit")
        notes += [f"parse: {problem}" for problem in parsed.problems]
        yield StreamUpdate(parsed.reasoning, parsed.response, done=True, row=row, note="; ".join(notes))

    def generate_stored(
        self,
        dataset: str,
        records: list[Record],
        version: str,
        settings: dict,
        family: str = "",
        split: str = "",
        seed: int = 0,
        on_batch=None,
    ) -> list[dict]:
        """The same as :meth:`stream` for many records at once (batched, not streamed): generate,
        score and store one generation per record; returns the stored rows."""
        described = self.version(version)
        generation_settings = self.generation_settings(described, settings, seed)
        with self._generating:
            loaded = self.activate(version)
            predictions = self.on_torch(
                predict,
                loaded,
                records,
                described.prompt_kind,
                generation_settings,
                settings["k"],
                PromptSettings(max_item_words=described.max_item_words),
                on_batch,
            )
        return [
            self._save(
                dataset,
                record,
                version,
                settings,
                p[0].prompt,
                p[0].retrieved,
                p[0].generation,
                p[0].parsed,
                family,
                split,
            )
            for record, p in zip(records, predictions)
        ]

    def _save(self, dataset, record, version, settings, prompt, retrieved, generation, parsed, family, split) -> dict:
        scores = self.score(record, parsed.response)
        return self.generations.save(
            self.key(dataset, record, version, settings),
            record,
            prompt=prompt,
            retrieved_ids=[x.item_id for x in retrieved],
            reasoning=parsed.reasoning,
            response=parsed.response,
            text=generation.text,
            new_tokens=generation.new_tokens,
            truncated=generation.truncated,
            stopped=generation.stopped,
            scores=scores,
            family=family,
            split=split,
        )

    def score(self, record: Record, response: str) -> dict[str, float]:
        judge = self.judge() if self.use_judge else None
        return self.on_torch(score_predictions, [record], [response], self.metrics(), judge)[0]


def settings_note(row: dict, settings: dict) -> str:
    """ "" when ``row`` was generated with ``settings``; else what it was made with, for its label."""
    own = json.loads(row.get("settings") or "{}")
    if {name: own.get(name) for name in settings} == settings:
        return ""
    made = ", ".join(
        f"{label} {own[name]}"
        for name, label in (("k", "k ="), ("max_new_tokens", "max new tokens"), ("temperature", "temperature"))
        if name in own
    )
    return f" made with {made or 'other settings'}, not the settings above (Generate makes one with them)"
