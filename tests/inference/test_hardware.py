"""Precision and threads chosen from the hardware: bf16 on a CPU only where it is native and faster."""

import pytest
import torch

from restpg.inference import hardware
from restpg.inference.hardware import (
    PrecisionError,
    choose_precision,
    cpu_flags,
    job_threads,
    page_threads,
    pick_device,
)

CPU = torch.device("cpu")
AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma"})  # e.g. AMD EPYC Rome: no native bf16
NATIVE = frozenset({"avx2", "avx512f", "avx512_bf16"})


@pytest.mark.parametrize(
    "flags, speeds, expected, why",
    [
        (AVX2_ONLY, None, torch.float32, "without native bf16"),
        (NATIVE, (100.0, 400.0), torch.bfloat16, "measured faster: 400 vs 100"),
        (NATIVE, (100.0, 105.0), torch.float32, "not measured faster"),
        (frozenset({"amx_bf16"}), (100.0, 300.0), torch.bfloat16, "native bf16"),
    ],
    ids=["avx2 only", "native and faster", "native, not faster", "amx"],
)
def test_auto_picks_bf16_on_a_cpu_only_where_native_and_faster(flags, speeds, expected, why):
    measured = []

    def measure():
        measured.append(1)
        return speeds

    choice = choose_precision("auto", CPU, flags=flags, measure=measure)
    assert choice.dtype == expected and why in choice.reason
    assert bool(measured) == (speeds is not None)  # no measurement where bf16 is not native


def test_a_cpu_without_bf16_loads_every_model_in_fp32(monkeypatch, tiny_model_dir):
    """Sampling, the judge and training all ask choose_precision: on an AVX2-only CPU, all fp32."""
    from restpg.inference.models import ModelConfig, load_model

    monkeypatch.setattr(hardware, "cpu_flags", lambda: AVX2_ONLY)
    loaded = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    assert loaded.dtype == torch.float32 and next(loaded.model.parameters()).dtype == torch.float32
    assert "without native bf16" in loaded.precision.reason


def test_explicit_dtypes_and_errors():
    assert choose_precision("float32", CPU).dtype == torch.float32
    asked = choose_precision("bfloat16", CPU, flags=AVX2_ONLY)
    assert asked.dtype == torch.bfloat16 and "no native bf16" in asked.reason  # honoured, with a warning
    with pytest.raises(PrecisionError, match="unknown dtype 'int3'"):
        choose_precision("int3", CPU)
    with pytest.raises(PrecisionError, match="unknown device"):
        pick_device("tpu:7")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma\n")
    assert cpu_flags(info) == {"fpu", "sse", "avx2", "fma"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize("cores, job, page_idle, page_busy", [(1, 1, 1, 1), (2, 2, 2, 1), (16, 16, 16, 4)])
def test_a_cpu_job_and_the_page_share_the_cores(cores, job, page_idle, page_busy):
    assert job_threads(cores) == job
    assert page_threads(False, cores) == page_idle and page_threads(True, cores) == page_busy


def test_training_runs_in_the_runs_precision(monkeypatch, tiny_model_dir, tmp_path):
    """--dtype reaches training: train_model builds its model in the ModelConfig's precision."""
    import restpg.training.train as train
    from restpg.inference.models import ModelConfig

    seen = []
    real = train.build_trainable_model
    monkeypatch.setattr(train, "build_trainable_model", lambda *a, **k: seen.append(a[2]) or real(*a, **k))
    config = train.TrainConfig(
        select_by="last",
        max_steps=1,
        batch_size=1,
        per_device_batch_size=1,
        warmup_steps=0,
        save_steps=1,
        optimizer="adamw_torch",
        lora_r=2,
        lora_alpha=4,
    )
    train.train_model(
        ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="bfloat16"),
        [train.TrainingExample("a", "b")],
        config,
        tmp_path / "run",
    )
    assert seen[0].dtype == torch.bfloat16


def test_each_accelerate_rank_gets_its_own_gpu(monkeypatch):
    """Under accelerate launch every rank has LOCAL_RANK: "auto" and "cuda" mean its own GPU."""
    import torch

    from restpg.inference.hardware import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert pick_device("auto") == pick_device("cuda") == torch.device("cuda:3")
    assert pick_device("cuda:1") == torch.device("cuda:1") and pick_device("cpu") == torch.device("cpu")
    monkeypatch.delenv("LOCAL_RANK")
    assert pick_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
