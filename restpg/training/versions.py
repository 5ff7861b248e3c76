"""Model versions: the base model, the trained versions shipped with restpg, and every finished
step (SFT, each EM round) under the runs directory.

A version is a LoRA adapter plus what it learned to read: the prompt kind (reasoning first, or
the answer directly), k and the word budget of the profile items. These come from the run's
manifest, so the page builds for each version the prompt it was trained on. The shipped versions
live in ``assets/models/<run>/`` with the run's manifest, timings and held-out metrics
(written by ``python -m restpg ship``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..data.retrieval import PAPER_TOP_K
from ..runs import ADAPTER_CONFIG, STEP_NAME, RunFolder, StepFolder

BASE_VERSION = "base"
SHIPPED_LABEL = "shipped"
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "assets" / "models"


@dataclass(frozen=True)
class ModelVersion:
    label: str  # what the pickers show: "base", "shipped round-2", "jobs/my-run sft"
    adapter: Path | None  # None: the base model
    prompt_kind: str = "reasoning"  # "reasoning" (REST-PG) or "rag" (answer directly: ReST-EM, SFT without reasoning)
    k: int = PAPER_TOP_K
    max_item_words: int | None = None
    max_input_tokens: int | None = None  # the prompt budget it was trained with (None: the paper's)
    base_model: str | None = None  # the base model the adapter was trained on (None: not recorded)
    reasoning_by: str = ""  # who wrote the stage-1 reasoning it learned from
    held_out: dict | None = None  # the step's held-out metrics summary (metrics.json), when present

    @property
    def shipped(self) -> bool:
        return self.label.startswith(SHIPPED_LABEL + " ")

    @property
    def step(self) -> str:
        return self.adapter.parent.name if self.adapter is not None else BASE_VERSION


def find_adapters(runs_root: Path) -> list[tuple[str, Path]]:
    """Every finished step's adapter under runs_root (run folders 1 or 2 levels deep), as (label, folder).

    Labels read "jobs/myrun round-2" or "cpu-small sft"; only folders holding adapter_config.json count.
    """
    base = Path(runs_root).resolve()
    if not base.is_dir():
        return []
    found: dict[tuple, tuple[str, Path]] = {}
    for pattern in (f"*/*/adapter/{ADAPTER_CONFIG}", f"*/*/*/adapter/{ADAPTER_CONFIG}"):
        for config in base.glob(pattern):
            adapter = config.parent
            step = adapter.parent.name
            match = STEP_NAME.fullmatch(step)
            run = adapter.parent.parent.relative_to(base)
            if not match or any(part.startswith(".") for part in run.parts) or not config.is_file():
                continue
            real = adapter.resolve()
            if not real.is_relative_to(base):
                continue
            key = (run.as_posix(), int(match.group(1)) if match.group(1) else -1)
            found[key] = (f"{run.as_posix()} {step}", real)
    return [found[key] for key in sorted(found)]


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def version_of(label: str, adapter: Path) -> ModelVersion:
    """The version in ``adapter``, described by its run's manifest and its step's metrics."""
    step_dir = adapter.parent
    manifest = _read_json(RunFolder(step_dir.parent).manifest)
    config = manifest.get("config", {})
    metrics = _read_json(StepFolder(step_dir).metrics)
    return ModelVersion(
        label=label,
        adapter=adapter,
        prompt_kind="reasoning" if config.get("reasoning", True) else "rag",
        k=int(config.get("k") or PAPER_TOP_K),
        max_item_words=config.get("max_item_words"),
        max_input_tokens=_trained_input_tokens(config),
        base_model=config.get("model"),
        reasoning_by=manifest.get("models", {}).get("teacher", ""),
        held_out=metrics.get("summary"),
    )


def _trained_input_tokens(config: dict) -> int | None:
    """The run's prompt budget (restpg.training.em.EMConfig.max_input_tokens), from its manifest's config."""
    budgets = [config.get(stage, {}).get("max_input_tokens") for stage in ("sft", "mstep")]
    budgets = [b for b in budgets if isinstance(b, int)]
    return min(budgets) if budgets else None


def find_versions(
    runs_root: Path, base_model: str, base_item_words: int | None, shipped_root: Path = SHIPPED_DIR
) -> dict[str, ModelVersion]:
    """The base model, the shipped versions, then every finished step under runs_root; adapters
    trained on another base model than ``base_model`` are left out (they would not load)."""
    versions = {BASE_VERSION: ModelVersion(BASE_VERSION, None, max_item_words=base_item_words, base_model=base_model)}
    found = [(f"{SHIPPED_LABEL} {label}", path) for label, path in find_adapters(shipped_root)]
    found += find_adapters(runs_root)
    for label, path in found:
        version = version_of(label, path)
        if version.base_model in (None, base_model):
            versions[label] = version
    return versions


def best_shipped(versions: dict[str, ModelVersion], metric: str = "rougeL") -> str:
    """The shipped version that reasons first (the page opens on a model reasoning; versions without
    reasoning, ReST-EM's and plain SFT's, only where none reasons) with the best held-out ``metric``
    (a later round wins a tie); base when none ships."""
    shipped = [v for v in versions.values() if v.shipped and v.held_out and metric in v.held_out]
    shipped = [v for v in shipped if v.prompt_kind == "reasoning"] or shipped
    if not shipped:
        return BASE_VERSION
    return max(enumerate(shipped), key=lambda pair: (pair[1].held_out[metric], pair[0]))[1].label
