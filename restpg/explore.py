"""The app's explore side, without any UI: datasets under the data directory (and uploads), model
versions (base + every finished adapter under the runs directory), and streamed, stored,
scored generations.

The Gradio callbacks in :mod:`restpg.app` call these methods and nothing else; the methods call the
same library functions as the CLI (``load_records``, ``retrieve``, ``build_prompt``, the metrics).
"""

from __future__ import annotations

import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .evaluate import prompt_for, score_predictions
from .generations import GenerationKey, GenerationStore
from .jobs import JobError, find_adapters, safe_child
from .longlamp import DatasetError, LoadedRecords, Record, load_records, sample_path
from .models import (GenerationSettings, LoadedModel, ModelConfig, ModelError, default_max_new_tokens, load_adapter,
                     load_model, stream_generate, use_adapter)
from .prompts import parse_output
from .store import Store

SAMPLE_DATASET = "shipped sample"
UPLOAD_FOLDER = "uploads"
DATA_SUFFIXES = (".json", ".jsonl", ".parquet")
BASE_VERSION = "base"
MAX_UPLOAD_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class AppPaths:
    """The only places the page reads datasets from and writes to."""

    data_dir: Path = Path("data")
    runs_dir: Path = Path("runs")

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
    _datasets: dict[tuple, LoadedRecords] = field(default_factory=dict, init=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False)  # short sections only
    # Held for a whole streamed generation; a plain Lock because Gradio may resume a generator on
    # another thread, and an RLock can only be released by the thread that took it.
    _generating: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.store = Store(self.paths.store)
        self.generations = GenerationStore(self.store)

    # -- datasets --------------------------------------------------------------------------
    def dataset_choices(self) -> list[str]:
        """The shipped sample, then every data file under the data directory (uploads included)."""
        root = self.paths.data_dir.resolve()
        files = sorted(str(path.relative_to(root)) for path in root.rglob("*")
                       if path.suffix in DATA_SUFFIXES and path.is_file()
                       and path.resolve().is_relative_to(root)
                       and not path.relative_to(root).parts[0] in ("longlamp_sample", "source"))
        return [SAMPLE_DATASET, *files]

    def dataset_path(self, dataset: str, task: str, family: str, split: str) -> Path:
        if dataset == SAMPLE_DATASET:
            return sample_path(task, family, split)
        try:
            path = safe_child(self.paths.data_dir, dataset)
        except JobError as error:
            raise DatasetError(str(error)) from None
        if not path.is_file() or path.suffix not in DATA_SUFFIXES:
            raise DatasetError(f"{dataset}: no such data file under {self.paths.data_dir} "
                               f"(one of {', '.join(DATA_SUFFIXES)})")
        return path

    def dataset(self, dataset: str, task: str, family: str, split: str) -> LoadedRecords:
        path = self.dataset_path(dataset, task, family, split)
        key = (str(path), task, family, split, path.stat().st_mtime_ns)
        with self._lock:
            if key not in self._datasets:
                # Lenient: bad records are listed in the page and the good ones kept.
                self._datasets[key] = load_records(path, task, family, split, strict=False)
            return self._datasets[key]

    def upload(self, temp_file: str | Path, original_name: str, task: str, family: str) -> str:
        """Validate an uploaded file and keep it under ``data/uploads``; returns its dataset name."""
        temp_file = Path(temp_file)
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(original_name).name).lstrip(".") or "upload"
        if Path(stem).suffix not in DATA_SUFFIXES:
            raise DatasetError(f"{original_name}: not a dataset file (expected {', '.join(DATA_SUFFIXES)})")
        if temp_file.stat().st_size > MAX_UPLOAD_BYTES:
            raise DatasetError(f"{original_name}: over the {MAX_UPLOAD_BYTES // 2**20} MiB upload limit")
        staged = temp_file.with_name(stem)  # the loader reads by suffix
        if staged != temp_file:
            shutil.copyfile(temp_file, staged)
        load_records(staged, task, family, strict=False)  # zero usable records raises, naming the file
        self.paths.uploads.mkdir(parents=True, exist_ok=True)
        target = safe_child(self.paths.uploads, stem)
        shutil.copyfile(staged, target.with_suffix(target.suffix + ".tmp"))
        target.with_suffix(target.suffix + ".tmp").replace(target)
        return str(target.resolve().relative_to(self.paths.data_dir.resolve()))

    def record(self, dataset: str, task: str, family: str, split: str, user: str, request_index: int) -> Record:
        records = self.dataset(dataset, task, family, split).for_user(user)
        if not records:
            raise DatasetError(f"user {user!r} has no records in {dataset} ({task}, {split})")
        if not 0 <= request_index < len(records):
            raise DatasetError(f"user {user!r} has no request {request_index} (they have {len(records)})")
        return records[request_index]  # the loader already skipped records with an empty profile

    # -- models ----------------------------------------------------------------------------
    def versions(self) -> dict[str, Path | None]:
        """Model versions for the picker: the base model and every finished adapter under runs/."""
        return {BASE_VERSION: None, **{label: path for label, path in find_adapters(self.paths.runs_dir)}}

    def model(self) -> LoadedModel:
        with self._lock:
            if self._model is None:
                self._model = load_model(self.model_config)
            return self._model

    def activate(self, version: str) -> LoadedModel:
        """The model with ``version``'s adapter active (attached once, then switched)."""
        versions = self.versions()
        if version not in versions:
            raise ModelError(f"unknown model version {version!r}; known: {', '.join(versions)}")
        loaded = self.model()
        adapter = versions[version]
        if adapter is None:
            use_adapter(loaded, None)
            return loaded
        name = next((n for n, path in loaded.adapters.items() if path == adapter), None)
        if name is None:
            name = load_adapter(loaded, adapter, re.sub(r"\W", "_", version) + f"_{len(loaded.adapters)}")
        use_adapter(loaded, name)
        return loaded

    def version_id(self, version: str) -> str:
        return self.model_config.model if version == BASE_VERSION else f"{self.model_config.model} + {version}"

    def metrics(self):
        from .metrics import LexicalMetrics

        with self._lock:
            if self._metrics is None:
                self._metrics = LexicalMetrics()
            return self._metrics

    def judge(self):
        from .reward import LLMJudge

        with self._lock:
            if self._judge is None:
                judge_config = ModelConfig(model=self.judge_model or self.model_config.model,
                                           device=self.model_config.device, dtype=self.model_config.dtype,
                                           cache_dir=self.model_config.cache_dir)
                self._judge = LLMJudge(load_model(judge_config), cache_file=self.paths.runs_dir / "app_judge_cache.jsonl")
            return self._judge

    def judge_name(self) -> str:
        name = self.judge_model or self.model_config.model
        return name + (" (the base model: a weak judge)" if self.judge_model in (None, self.model_config.model) else "")

    # -- generation ------------------------------------------------------------------------
    def settings_for(self, k: int, max_new_tokens: int | None, temperature: float) -> dict:
        if not 1 <= k <= 20:
            raise ValueError(f"k must be between 1 and 20 (got {k})")
        if not 0.0 <= temperature <= 2.0:
            raise ValueError(f"temperature must be between 0 and 2 (got {temperature})")
        tokens = max_new_tokens or default_max_new_tokens(self.model().device)
        if not 1 <= tokens <= 4096:
            raise ValueError(f"max new tokens must be between 1 and 4096 (got {tokens})")
        return {"k": k, "max_new_tokens": tokens, "temperature": temperature}

    def key(self, dataset: str, record: Record, version: str, settings: dict) -> GenerationKey:
        return GenerationKey.of(dataset, record.record_id, self.version_id(version), **settings)

    def stored(self, dataset: str, record: Record, version: str, settings: dict) -> dict | None:
        return self.generations.latest(self.key(dataset, record, version, settings))

    def stream(self, dataset: str, record: Record, version: str, settings: dict, family: str = "", split: str = "",
               stop: threading.Event | None = None) -> Iterator[StreamUpdate]:
        """Generate reasoning + response token by token, then score and store it."""
        retrieved, prompt = prompt_for(record, "reasoning", settings["k"])
        generation_settings = GenerationSettings(max_new_tokens=settings["max_new_tokens"],
                                                 temperature=settings["temperature"], seed=None)
        with self._generating:  # one generation at a time on the shared model
            loaded = self.activate(version)
            final = None
            for final in stream_generate(loaded, prompt, generation_settings, stop):
                parsed = parse_output(final.text, truncated=False)
                yield StreamUpdate(parsed.reasoning or final.text, parsed.response, done=False)
        parsed = parse_output(final.text, final.truncated)
        scores = self.score(record, parsed.response)
        row = self.generations.save(self.key(dataset, record, version, settings), record, prompt=prompt,
                                    retrieved_ids=[x.item_id for x in retrieved], reasoning=parsed.reasoning,
                                    response=parsed.response, text=final.text, new_tokens=final.new_tokens,
                                    truncated=final.truncated, stopped=final.stopped, scores=scores,
                                    family=family, split=split)
        notes = [f"{final.new_tokens} new tokens"]
        if final.stopped:
            notes.append("stopped by you")
        elif final.truncated:
            notes.append("cut at the token limit")
        notes += [f"parse: {problem}" for problem in parsed.problems]
        yield StreamUpdate(parsed.reasoning, parsed.response, done=True, row=row, note="; ".join(notes))

    def score(self, record: Record, response: str) -> dict[str, float]:
        return score_predictions([record], [response], self.metrics(), self.judge() if self.use_judge else None)[0]
