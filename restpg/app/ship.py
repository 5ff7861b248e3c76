"""Shipping a trained run with restpg: ``python -m restpg ship --run-dir runs/shipped``.

Writes ``assets/models/<name>/`` (what the app lists as the "shipped" versions and opens on):

    manifest.json, timings.json, peak_memory.json  the run's, unchanged
    sft/adapter/, sft/metrics.json      the SFT-with-reasoning adapter and its held-out metrics
    round-N/adapter/, metrics.json,     each EM round's adapter, metrics, E-step samples and selection
      samples.jsonl, selection.json
    generations.jsonl                   base, SFT and the last round's outputs on every validation and
                                        test request of the sample, scored, as the app stores them

Adapters are stored in bf16 (half the size of the fp32 training copy: a few MB each; they load
into an fp32 or bf16 model alike). The generations use the page's own code path and default
settings (k = 5, temperature 0.1, the device's token limit), so the page finds them as stored
generations and shows them at once.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from ..errors import RestpgError
from ..runs import ADAPTER_CONFIG, MANIFEST, METRICS, SELECTION, RunFolder, round_name
from ..training.versions import SHIPPED_DIR, SHIPPED_LABEL

# the step's metrics, its E-step's samples and selection (the Rate tab lists shipped samples), which
# checkpoint was kept and why, and its training's tokens, time and precision
STEP_FILES = (
    METRICS,
    SELECTION,
    "samples.jsonl",
    "training_set.jsonl",
    "human_selection.json",
    "checkpoint_selection.json",
    "train_result.json",
)


class ShipError(RestpgError, RuntimeError):
    """A run folder that cannot be shipped (unfinished, missing files); names what is missing."""


@dataclass(frozen=True)
class ShipReport:
    out_dir: Path
    steps: list[str]
    generations: int
    adapter_bytes: int
    quality: list[dict]  # quality_table() of the generations


def _copy_adapter(source: Path, target: Path) -> int:
    """The adapter's config and its weights in bf16; returns the weights' size in bytes."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = source / "adapter_model.safetensors"
    if not (source / ADAPTER_CONFIG).exists() or not weights.exists():
        raise ShipError(f"{source}: not a finished adapter ({ADAPTER_CONFIG} and adapter_model.safetensors needed)")
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / ADAPTER_CONFIG, target / ADAPTER_CONFIG)
    tensors = {
        name: value.to(torch.bfloat16) if value.is_floating_point() else value
        for name, value in load_file(str(weights)).items()
    }
    save_file(tensors, str(target / "adapter_model.safetensors"), metadata={"format": "pt"})
    return (target / "adapter_model.safetensors").stat().st_size


def ship_run(
    run_dir: Path,
    name: str = "restpg-sample",
    shipped_root: Path = SHIPPED_DIR,
    splits: tuple[str, ...] = ("val", "test"),
    model_config=None,
    on_progress: Callable[[str, int, int], None] = lambda stage, done, total: None,
    with_base: bool = True,
) -> ShipReport:
    """Copy a finished run into ``shipped_root/name`` and generate its demo generations (the base
    model's too, unless ``with_base`` is False: another shipped run already stores them)."""
    from ..training.em import EMConfig

    run_dir = Path(run_dir)
    run = RunFolder(run_dir)
    manifest_file = run.manifest
    if not manifest_file.exists():
        raise ShipError(f"{run_dir}: no {MANIFEST} (not a run folder)")
    manifest = json.loads(manifest_file.read_text())
    config = EMConfig.from_dict(manifest["config"])
    steps = [round_name(t) for t in range(config.rounds + 1)]
    missing = [step for step in steps if not run.step(step).metrics.exists()]
    if missing:
        raise ShipError(f"{run_dir}: unfinished run, no metrics yet for {', '.join(missing)}")
    out_dir = Path(shipped_root) / name
    staging_root = Path(shipped_root) / ".staging"  # read as a shipped root while generating; never listed
    staging = staging_root / name
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    staged = RunFolder(staging)
    for source, target in (
        (run.manifest, staged.manifest),
        (run.timings, staged.timings),
        (run.peak_memory, staged.peak_memory),
    ):
        if source.exists():
            shutil.copyfile(source, target)
    size = 0
    for step in steps:
        size += _copy_adapter(run.step(step).adapter, staged.step(step).adapter)
        for file in STEP_FILES:
            if (run.step(step).path / file).exists():
                shutil.copyfile(run.step(step).path / file, staged.step(step).path / file)

    # The demo generations: the page's code path, on the staged versions.
    rows = _demo_generations(config, staging_root, name, splits, model_config, on_progress, with_base)
    with staged.generations.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    shutil.rmtree(staging_root, ignore_errors=True)
    # A run trained without reasoning answers directly: its answer is the whole output.
    direct = (
        set()
        if config.reasoning
        else {r["model_version"] for r in rows if f"{SHIPPED_LABEL} {name} " in r["model_version"]}
    )
    return ShipReport(out_dir, steps, len(rows), size, quality_table(rows, direct))


def _demo_generations(
    config, shipped_root: Path, name: str, splits, model_config, on_progress, with_base: bool = True
) -> list[dict]:
    """Base, SFT and last-round generations, as the page makes and stores them, with the versions in
    ``shipped_root/name`` read as shipped ones (labels "shipped <name> <step>")."""
    import tempfile

    from ..inference.models import ModelConfig
    from ..training.em import load_split
    from .explore import SAMPLE_DATASET, AppPaths, ExploreService

    records_by_split = {split: load_split(config, split, None) for split in splits}
    with tempfile.TemporaryDirectory() as scratch:
        service = ExploreService(
            model_config or ModelConfig(model=config.model, device=config.device, dtype=config.dtype),
            AppPaths(data_dir=Path(scratch), runs_dir=Path(scratch) / "runs", shipped_dir=shipped_root),
        )
        last = round_name(config.rounds)
        versions = (
            ["base"] * with_base
            + [f"{SHIPPED_LABEL} {name} sft"]
            + ([f"{SHIPPED_LABEL} {name} {last}"] if config.rounds else [])
        )
        settings = service.settings_for(config.k, None, 0.1)
        total = len(versions) * sum(len(r) for r in records_by_split.values())
        done = 0
        rows = []
        for version in versions:
            for split, records in records_by_split.items():

                def step(n, version=version):
                    nonlocal done
                    done += n
                    on_progress(f"generating ({version})", done, total)

                rows += service.generate_stored(
                    SAMPLE_DATASET, records, version, settings, family=config.family, split=split, on_batch=step
                )
    return rows


def quality_table(rows: list[dict], direct: Collection[str] = ()) -> list[dict]:
    """Per model version and split: requests, share with a parsed final answer (reasoning and
    response both found; for the versions in ``direct``, which answer without reasoning, a
    response), mean ROUGE-L, METEOR and judge score of the stored generations."""
    from statistics import fmean

    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model_version"], row["split"]), []).append(row)
    table = []
    for (version, split), group in groups.items():
        scores = [json.loads(r["scores"]) for r in group]
        table.append(
            {
                "version": version,
                "split": split,
                "requests": len(group),
                "answered": fmean(
                    1.0 if r["response"].strip() and (version in direct or r["reasoning"].strip()) else 0.0
                    for r in group
                ),
                **{name: fmean(s.get(name, 0.0) for s in scores) for name in ("rougeL", "meteor", "judge")},
            }
        )
    return table
