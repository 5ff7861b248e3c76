"""restpg.inference.vllm_sampling: the E-step's sampling through vLLM.

vLLM needs a CUDA GPU, so these tests run restpg's side against a stand-in ``vllm`` package that
records what it is asked and answers with fixed token ids: the prompt tokens restpg sends, the
sampling parameters, the LoRA request per adapter, the order and cutting of the samples, and the
E-step of a whole run through ``engine="vllm"``. The engine itself was measured on an H200
(bench/vllm_bench.py; docs/training.md, "vLLM for the E-step").
"""

from __future__ import annotations

import importlib.machinery
import json
import shutil
import sys
import threading
import types
from pathlib import Path

import pytest

from restpg.inference import vllm_sampling
from restpg.inference.cancel import Cancelled
from restpg.inference.models import GenerationSettings, chat_text, load_tokenizer
from restpg.inference.vllm_sampling import (
    EngineError,
    VLLMConfig,
    VLLMGenerator,
    adapter_rank,
    check_engine,
    engine_arguments,
    lora_rank_slot,
    sampling_arguments,
)
from restpg.runs import RunFolder, StepFolder
from restpg.training.em import EMConfig, Models, RunError, check_manifest, run_em

SHIPPED_ADAPTER = Path(__file__).resolve().parents[2] / "assets/models/restpg-sample/sft/adapter"


class FakeLLM:
    """Stands in for vllm.LLM: sample j of a prompt is the text "sample j of N" (N: the prompt's
    token count) then EOS then a stray token; the last sample of each prompt runs to max_tokens
    without EOS. Samples come back in reverse index order (vLLM does not promise an order)."""

    instances: list[FakeLLM] = []

    def __init__(self, **arguments):
        self.arguments = arguments
        self.calls: list[tuple[list[dict], list, object]] = []
        self.shut_down = False
        self.tokenizer = load_tokenizer(arguments["tokenizer"])
        self.llm_engine = types.SimpleNamespace(engine_core=types.SimpleNamespace(shutdown=self._shutdown))
        FakeLLM.instances.append(self)

    def _shutdown(self):
        self.shut_down = True

    def generate(self, prompts, params, use_tqdm=True, lora_request=None):
        self.calls.append((prompts, params, lora_request))
        eos = self.tokenizer.eos_token_id
        outputs = []
        for prompt, p in zip(prompts, params):
            n_tokens = len(prompt["prompt_token_ids"])
            samples = []
            for j in range(p.kwargs["n"]):
                if j == p.kwargs["n"] - 1:
                    ids = (self.tokenizer(" long" * p.kwargs["max_tokens"], add_special_tokens=False)["input_ids"])[
                        : p.kwargs["max_tokens"]
                    ]
                else:
                    ids = self.tokenizer(f"sample {j} of {n_tokens}", add_special_tokens=False)["input_ids"]
                    ids = [*ids, eos, ids[0]]
                samples.append(types.SimpleNamespace(index=j, token_ids=tuple(ids)))
            outputs.append(types.SimpleNamespace(outputs=samples[::-1]))
        return outputs


class FakeSamplingParams:
    # the SamplingParams fields restpg sets (vllm 0.25.1's names): a misspelt one fails here too
    KNOWN = {"n", "temperature", "top_p", "max_tokens", "seed", "stop_token_ids", "detokenize"}

    def __init__(self, **kwargs):
        assert set(kwargs) <= self.KNOWN, set(kwargs) - self.KNOWN
        self.kwargs = kwargs


@pytest.fixture
def fake_vllm(monkeypatch):
    """A ``vllm`` package of stand-ins in sys.modules, and the CUDA check passed."""
    package = types.ModuleType("vllm")
    package.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    package.LLM = FakeLLM
    package.SamplingParams = FakeSamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = dict
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, lora_id, path: ("lora", name, lora_id, path)
    for name, module in {
        "vllm": package,
        "vllm.inputs": inputs,
        "vllm.lora": lora,
        "vllm.lora.request": request,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(vllm_sampling, "check_engine", lambda *args: None)
    FakeLLM.instances = []
    return FakeLLM


def test_sampling_arguments_are_the_papers_sampling_with_a_seed_per_prompt():
    settings = GenerationSettings(max_new_tokens=128, temperature=0.7, top_p=0.95, num_samples=32, seed=3)
    first, second = (sampling_arguments(settings, {2, 0}, index) for index in (0, 1))
    assert first == {
        "n": 32,
        "temperature": 0.7,
        "top_p": 0.95,
        "max_tokens": 128,
        "seed": 3 * 1_000_003,
        "stop_token_ids": [0, 2],
        "detokenize": False,
    }
    # vLLM seeds sample j of a request with its seed + j: no two samples of a call may share one
    seeds = [sampling_arguments(settings, set(), i)["seed"] + j for i in range(16) for j in range(settings.num_samples)]
    assert len(set(seeds)) == len(seeds)
    assert second["seed"] == first["seed"] + 32
    greedy = sampling_arguments(GenerationSettings(temperature=0.0, num_samples=4, seed=None), {2}, 0)
    assert (greedy["n"], greedy["temperature"], greedy["top_p"], greedy["seed"]) == (1, 0.0, 1.0, None)


def test_lora_rank_slots_are_vllms():
    assert [lora_rank_slot(r) for r in (1, 8, 9, 16, 17, 64, 300, 512)] == [1, 8, 16, 16, 32, 64, 320, 512]
    with pytest.raises(EngineError, match="513"):
        lora_rank_slot(513)


def test_adapter_rank_reads_the_shipped_adapter_and_names_a_bad_file(tmp_path):
    assert adapter_rank(SHIPPED_ADAPTER) == json.loads((SHIPPED_ADAPTER / "adapter_config.json").read_text())["r"]
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(EngineError, match="adapter_config.json"):
        adapter_rank(tmp_path)
    with pytest.raises(EngineError, match="adapter_config.json"):
        adapter_rank(tmp_path / "missing")


def test_engine_arguments_enable_lora_only_with_a_rank():
    base = VLLMConfig(model="m", dtype="bfloat16", max_model_len=3584)
    assert engine_arguments(base) == {
        "model": "m",
        "tokenizer": "m",
        "dtype": "bfloat16",
        "max_model_len": 3584,
        "gpu_memory_utilization": vllm_sampling.DEFAULT_MEMORY_FRACTION,
        "seed": 0,
    }
    lora = engine_arguments(VLLMConfig(model="m", dtype="bfloat16", max_model_len=3584, lora_rank=12))
    assert (lora["enable_lora"], lora["max_lora_rank"], lora["max_loras"]) == (True, 16, 1)


def installed_vllm(monkeypatch) -> None:
    """An importable (empty) vllm package, as find_spec sees it."""
    package = types.ModuleType("vllm")
    package.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    monkeypatch.setitem(sys.modules, "vllm", package)


def test_check_engine_names_what_is_missing(monkeypatch):
    check_engine("hf", "cpu", processes=4)  # nothing to check
    monkeypatch.setitem(sys.modules, "vllm", None)  # find_spec answers None: not installed
    with pytest.raises(EngineError, match="pip install vllm"):
        check_engine("vllm", "auto")


def test_check_engine_wants_cuda(monkeypatch):
    installed_vllm(monkeypatch)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(EngineError, match="CUDA"):
        check_engine("vllm", "auto")


@pytest.mark.parametrize(
    ("device", "processes", "message"), [("cuda:1", 1, "CUDA_VISIBLE_DEVICES=1"), ("cuda", 2, "one process")]
)
def test_check_engine_refuses_what_the_engine_would_not_follow(monkeypatch, device, processes, message):
    installed_vllm(monkeypatch)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    check_engine("vllm", "cuda:0")
    with pytest.raises(EngineError, match=message):
        check_engine("vllm", device, processes)


def test_a_run_with_engine_vllm_stops_before_training_where_it_cannot_sample(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    config = EMConfig(**{**tiny_config.__dict__, "engine": "vllm"})
    with pytest.raises(RunError, match="pip install vllm"):
        run_em(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("engine", "tgi", "--engine"),
        ("vllm_memory_fraction", 0.0, "--vllm-memory"),
        ("vllm_memory_fraction", 1.0, "--vllm-memory"),
    ],
)
def test_config_checks_the_engine_fields(tiny_config, field, value, flag):
    with pytest.raises(RunError, match=f"^{flag}: "):
        EMConfig(**{**tiny_config.__dict__, field: value})


def test_generator_sends_restpgs_prompt_tokens_and_reads_back_samples_in_order(fake_vllm, tiny_model_dir):
    engine = VLLMGenerator(VLLMConfig(model=str(tiny_model_dir), dtype="float32", max_model_len=512, lora_rank=8))
    tokenizer = load_tokenizer(str(tiny_model_dir))
    prompts = ["Write a review of a kettle.", "Write a review of a lamp.", "A third request."]
    settings = GenerationSettings(max_new_tokens=5, temperature=0.7, num_samples=3, batch_size=2, seed=7)
    batches = []
    results = engine.generate(prompts, settings, on_batch=batches.append)

    llm = fake_vllm.instances[0]
    assert llm.arguments["enable_lora"] and llm.arguments["max_lora_rank"] == 8
    assert batches == [2, 1] and len(llm.calls) == 2  # batch_size prompts a call
    sent = [p["prompt_token_ids"] for call in llm.calls for p in call[0]]
    expected = [tokenizer(chat_text(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]
    assert sent == expected  # the chat-formatted prompt, tokenized as the HF path does
    seeds = [p.kwargs["seed"] for call in llm.calls for p in call[1]]
    assert seeds == [7 * 1_000_003 + 3 * i for i in range(3)]  # a seed per prompt, spaced by m
    for prompt_ids, samples in zip(expected, results):
        assert [s.text for s in samples[:2]] == [f"sample {j} of {len(prompt_ids)}" for j in range(2)]  # by index
        assert [s.truncated for s in samples] == [False, False, True]  # cut at EOS; the last ran to the limit
        assert samples[2].new_tokens == 5 and samples[0].new_tokens < 10  # tokens after EOS dropped
    engine.close()
    assert llm.shut_down


def test_generator_sends_the_adapter_as_a_lora_request(fake_vllm, tiny_model_dir, tmp_path):
    engine = VLLMGenerator(VLLMConfig(model=str(tiny_model_dir), dtype="float32", max_model_len=512, lora_rank=8))
    settings = GenerationSettings(max_new_tokens=3, num_samples=1)
    engine.use_adapter(SHIPPED_ADAPTER)
    engine.generate(["a"], settings)
    engine.use_adapter(None)
    engine.generate(["a"], settings)
    engine.use_adapter(SHIPPED_ADAPTER)
    engine.generate(["a"], settings)
    requests = [call[2] for call in fake_vllm.instances[0].calls]
    assert requests == [("lora", "restpg-1", 1, str(SHIPPED_ADAPTER.resolve())), None, requests[0]]
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "adapter_config.json").write_text(json.dumps({"r": 64}))
    with pytest.raises(EngineError, match="rank 64"):
        engine.use_adapter(wide)
    without = VLLMGenerator(VLLMConfig(model=str(tiny_model_dir), dtype="float32", max_model_len=512))
    with pytest.raises(EngineError, match="without LoRA"):
        without.use_adapter(SHIPPED_ADAPTER)


def test_greedy_draws_once_and_copies(fake_vllm, tiny_model_dir):
    engine = VLLMGenerator(VLLMConfig(model=str(tiny_model_dir), dtype="float32", max_model_len=512))
    results = engine.generate(["a"], GenerationSettings(max_new_tokens=5, temperature=0.0, num_samples=3))
    assert [p.kwargs["n"] for p in fake_vllm.instances[0].calls[0][1]] == [1]
    assert len(results[0]) == 3 and len({g.text for g in results[0]}) == 1


def test_a_dead_engine_reads_as_cancelled_when_the_run_was(fake_vllm, tiny_model_dir):
    engine = VLLMGenerator(VLLMConfig(model=str(tiny_model_dir), dtype="float32", max_model_len=512))
    cancel = threading.Event()

    def killed(*args, **kwargs):  # the job's SIGTERM ends the engine's process mid-call
        cancel.set()
        raise RuntimeError("EngineCore encountered an issue")

    engine._llm.generate = killed
    with pytest.raises(Cancelled):
        engine.generate(["a"], GenerationSettings(max_new_tokens=3), cancel=cancel)
    engine._llm.generate = lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("engine died"))
    with pytest.raises(RuntimeError, match="engine died"):  # not cancelled: the error itself
        engine.generate(["a"], GenerationSettings(max_new_tokens=3), cancel=threading.Event())


def test_generator_stops_when_cancelled(fake_vllm, tiny_model_dir):
    engine = VLLMGenerator(VLLMConfig(model=str(tiny_model_dir), dtype="float32", max_model_len=512))
    cancel = threading.Event()
    settings = GenerationSettings(max_new_tokens=3, num_samples=1, batch_size=1)
    cancel.set()
    with pytest.raises(Cancelled):
        engine.generate(["a", "b"], settings, cancel=cancel)
    assert fake_vllm.instances[0].calls == []


def test_models_keep_one_engine_across_adapters_and_close_it_on_release(fake_vllm, tiny_config, tmp_path):
    models = Models(EMConfig(**{**tiny_config.__dict__, "engine": "vllm"}))
    first = models.sampler(None)
    assert models.sampler(SHIPPED_ADAPTER) is first  # a new adapter is a new LoRA request, not a new engine
    assert lora_rank_slot(first.config.lora_rank) >= adapter_rank(SHIPPED_ADAPTER)
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "adapter_config.json").write_text(json.dumps({"r": 64}))
    judge = models._judge = object()  # held by a caller (the E-step's reward): a restart keeps it
    second = models.sampler(wide)  # a wider adapter: an engine that holds its rank
    assert second is not first and second.config.lora_rank == 64 and fake_vllm.instances[0].shut_down
    assert models._judge is judge
    models.release()
    assert fake_vllm.instances[1].shut_down and models._engine is None and models._judge is None


def test_a_step_trained_in_full_gets_an_engine_on_its_own_model(fake_vllm, tiny_config, tiny_model_dir, tmp_path):
    models = Models(EMConfig(**{**tiny_config.__dict__, "engine": "vllm"}))
    base = models.sampler(SHIPPED_ADAPTER)
    step = tmp_path / "round-1" / "adapter"  # what a full-fine-tuning step saves: a whole model
    shutil.copytree(tiny_model_dir, step)
    whole = models.sampler(step)
    assert whole is not base and base._llm is None  # the base's engine closed
    assert fake_vllm.instances[1].arguments["model"] == str(step)
    assert "enable_lora" not in fake_vllm.instances[1].arguments and whole._lora is None
    assert models.sampler(step) is whole


def test_a_run_samples_its_e_step_through_the_engine(fake_vllm, tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr("restpg.training.em.check_engine", lambda *args: None)
    from restpg.training import em

    config = EMConfig(**{**tiny_config.__dict__, "engine": "vllm", "rounds": 1})
    run_dir = tmp_path / "run"
    train = em.train_model
    trained_beside = []

    def train_model(*args, **kwargs):  # no engine may be running while a step trains
        trained_beside.append([llm for llm in fake_vllm.instances if not llm.shut_down])
        return train(*args, **kwargs)

    monkeypatch.setattr(em, "train_model", train_model)
    run_em(config, run_dir)
    assert len(trained_beside) == 2 and trained_beside == [[], []]  # SFT and the M-step
    samples = [json.loads(line) for line in StepFolder(run_dir / "round-1").samples.read_text().splitlines()]
    assert len(samples) == config.samples_per_input * len({s["record_id"] for s in samples})
    assert all(s["text"].lstrip().startswith(("sample ", "long")) for s in samples)  # the engine's samples, decoded
    lora_paths = {call[2][3] for llm in fake_vllm.instances for call in llm.calls if call[2] is not None}
    assert str(RunFolder(run_dir).sft.adapter.resolve()) in lora_paths  # the E-step's adapter


def test_a_resume_may_change_the_engines_memory_share_but_not_the_engine(tiny_config, tmp_path):
    check_manifest(tmp_path, EMConfig(**{**tiny_config.__dict__, "engine": "vllm"}), "data")
    check_manifest(
        tmp_path, EMConfig(**{**tiny_config.__dict__, "engine": "vllm", "vllm_memory_fraction": 0.6}), "data"
    )
    with pytest.raises(RunError, match="engine"):  # the samples would come from another sampler
        check_manifest(tmp_path, tiny_config, "data")
