import json

import pytest
import torch

from helpers import DEVICES, make_adapter
from restpg.data.prompts import PromptTooLongError
from restpg.inference.hardware import PrecisionError
from restpg.inference.models import (
    DEFAULT_MODEL,
    GenerationSettings,
    ModelConfig,
    ModelError,
    chat_text,
    check_adapter_folder,
    generate,
    load_adapter,
    load_merged,
    load_model,
    load_tokenizer,
    resolve_model,
    stream_generate,
    use_adapter,
)

GREEDY = GenerationSettings(max_new_tokens=6, temperature=0.0, batch_size=2)


def test_default_model_is_converted_once_into_a_plain_hf_folder(default_model_dir):
    config = json.loads((default_model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert resolve_model(DEFAULT_MODEL) == str(default_model_dir)  # cached: no second conversion


def test_bad_model_names(tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        resolve_model("./no/such/folder")
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(ModelError, match="not a model folder"):
        resolve_model(str(tmp_path / "notamodel"))
    with pytest.raises(PrecisionError, match="unknown dtype"):
        load_model(ModelConfig(model=str(tmp_path), dtype="int3"))


def test_chat_template_is_applied(tiny_model):
    text = chat_text(tiny_model.tokenizer, "hello")
    assert "<|im_start|>user\nhello<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")


def test_a_base_model_without_a_chat_template_reads_its_bos_then_the_plain_prompt(tiny_model_dir, tmp_path):
    """No chat template -> the plain prompt after BOS, in generation and in training alike."""
    import shutil

    from restpg.training.train import TrainConfig, TrainingExample, tokenize_examples

    folder = tmp_path / "base-model"
    shutil.copytree(tiny_model_dir, folder)
    tokenizer = load_tokenizer(str(folder))
    tokenizer.chat_template = None
    tokenizer.add_bos_token = True  # as Llama's and Gemma's tokenizers do
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    loaded = load_model(ModelConfig(model=str(folder), device="cpu", dtype="float32"))
    bos = loaded.tokenizer.bos_token_id
    assert not loaded.tokenizer.chat_template
    assert (
        chat_text(loaded.tokenizer, "instruction: hi\nanswer:")
        == loaded.tokenizer.bos_token + "instruction: hi\nanswer:"
    )
    row = tokenize_examples(loaded.tokenizer, [TrainingExample("instruction: hi\nanswer:", "yes")], TrainConfig())[0]
    assert row["input_ids"][0] == bos and row["input_ids"].count(bos) == 1
    seen = {}
    forward = loaded.model.forward

    def spy(*args, **kwargs):
        seen.setdefault("ids", kwargs.get("input_ids"))
        return forward(*args, **kwargs)

    loaded.model.forward = spy
    generate(loaded, ["instruction: hi\nanswer:"], GenerationSettings(max_new_tokens=2, temperature=0.0))
    assert seen["ids"][0, 0].item() == bos and seen["ids"][0].tolist().count(bos) == 1
    no_bos = load_tokenizer(str(tiny_model_dir))
    no_bos.chat_template = None  # a GPT-2-like tokenizer that puts no BOS first: the prompt as it is
    assert chat_text(no_bos, "plain") == "plain"


@pytest.mark.parametrize("device", DEVICES)
def test_batched_sampling_shapes_and_order(tiny_model_on, device):
    tiny_model = tiny_model_on(device)
    prompts = ["a short one", "a much longer prompt " * 5, "mid length prompt"]
    settings = GenerationSettings(max_new_tokens=5, temperature=0.7, num_samples=3, batch_size=2, seed=1)
    results = generate(tiny_model, prompts, settings)
    assert [len(samples) for samples in results] == [3, 3, 3]
    assert all(0 < g.new_tokens <= 5 for samples in results for g in samples)
    assert generate(tiny_model, prompts, settings) == results  # seeded: reproducible


def test_nucleus_warper_is_transformers_temperature_and_top_p():
    """The E-step's nucleus filter keeps exactly the tokens transformers' warpers keep, with
    the same values, whether the nucleus lies among the candidates or not (then: the fallback)."""
    import torch
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    from restpg.inference.models import NucleusWarper

    generator = torch.Generator().manual_seed(0)
    ids = torch.zeros(6, 2, dtype=torch.long)
    for scale in (0.3, 3.0, 12.0):  # flat (nucleus of thousands: fallback) to peaked (a few tokens)
        scores = torch.randn(6, 5000, generator=generator) * scale
        expected = TopPLogitsWarper(0.95)(ids, TemperatureLogitsWarper(0.7)(ids, scores.clone()))
        assert torch.equal(NucleusWarper(0.95, 0.7, candidates=64)(ids, scores.clone()), expected)
    assert torch.equal(NucleusWarper(1.0, 0.5)(ids, scores), scores / 0.5)


def test_the_e_step_draws_from_transformers_distribution():
    """The E-step's draw (``NucleusWarper.draw``) samples from exactly the distribution transformers'
    temperature and top-p warpers leave: checked on the candidates' probabilities, and by counting."""
    import torch
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    from restpg.inference.models import NucleusWarper

    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 300, generator=generator) * 4
    ids = torch.zeros(2, 1, dtype=torch.long)
    expected = torch.softmax(TopPLogitsWarper(0.9)(ids, TemperatureLogitsWarper(0.7)(ids, logits.clone())), dim=-1)
    warper = NucleusWarper(0.9, 0.7, candidates=64)
    top, index, outside = warper.nucleus(logits / 0.7)
    assert not outside.any()
    implied = torch.zeros_like(expected).scatter_(-1, index, torch.softmax(top, dim=-1))
    assert torch.allclose(implied, expected, atol=1e-6)
    torch.manual_seed(0)
    draws = torch.stack([warper.draw(logits) for _ in range(4000)])
    for row in range(2):
        frequencies = torch.bincount(draws[:, row], minlength=300).float() / 4000
        assert (frequencies - expected[row]).abs().max() < 0.03
        assert frequencies[expected[row] == 0].sum() == 0  # nothing outside the nucleus


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num_samples", [1, 2])  # 1: the evaluation's inference; 2: the E-step
def test_the_sampling_loop_decodes_as_generate_does(tiny_model_on, num_samples, device):
    """With a nucleus of one token (top_p near 0) restpg's own sampling loop must give greedy
    decoding's outputs: the same cache, positions and masks as transformers' generate, prompts of any
    length."""
    tiny_model = tiny_model_on(device)
    prompts = ["a short one", "a much longer prompt " * 5, "mid length prompt"]
    nucleus_of_one = GenerationSettings(
        max_new_tokens=6, temperature=0.7, top_p=1e-9, num_samples=num_samples, batch_size=3, seed=0
    )
    ours = generate(tiny_model, prompts, nucleus_of_one)
    greedy = generate(tiny_model, prompts, GenerationSettings(max_new_tokens=6, temperature=0.0, batch_size=1))
    assert [[g.text for g in samples] for samples in ours] == [[g[0].text] * num_samples for g in greedy]


@pytest.mark.parametrize("device", DEVICES)
def test_greedy_is_the_same_batched_or_alone(tiny_model_on, device):
    tiny_model = tiny_model_on(device)
    prompts = ["first prompt here", "second, a good deal longer prompt with more words in it"]
    together = generate(tiny_model, prompts, GREEDY)
    alone = [generate(tiny_model, [p], GREEDY)[0] for p in prompts]
    assert [r[0].text for r in together] == [r[0].text for r in alone]


def test_truncation_is_flagged(tiny_model):
    out = generate(tiny_model, ["hello"], GenerationSettings(max_new_tokens=3, temperature=0.0))[0][0]
    # A random tiny model never emits end-of-sequence this early: it stops at the limit.
    assert out.truncated and out.new_tokens == 3


def test_overlong_prompt_is_refused(tiny_model):
    with pytest.raises(PromptTooLongError, match="prompt 1 has .* tokens; the limit is 60"):
        generate(tiny_model, ["ok", "word " * 50], GenerationSettings(max_input_tokens=60))


@pytest.mark.parametrize("device", DEVICES)
def test_adapters_attach_and_switch_without_reloading(tiny_model_dir, tmp_path, device):
    loaded = load_model(ModelConfig(model=str(tiny_model_dir), device=device, dtype="float32"))
    prompt = ["tell me something"]
    base_text = generate(loaded, prompt, GREEDY)[0][0].text
    base_module = loaded.model
    load_adapter(loaded, make_adapter(tiny_model_dir, tmp_path / "round1", seed=1))
    load_adapter(loaded, make_adapter(tiny_model_dir, tmp_path / "round2", seed=2))
    assert loaded.active_adapter == "round2" and set(loaded.adapters) == {"round1", "round2"}
    texts = {}
    for name in ("round1", "round2", None):
        use_adapter(loaded, name)
        texts[name] = generate(loaded, prompt, GREEDY)[0][0].text
    assert texts[None] == base_text  # the base model is back, unchanged
    assert len({texts["round1"], texts["round2"], base_text}) == 3
    assert loaded.model.get_base_model() is base_module  # one base model, never reloaded
    with pytest.raises(ModelError, match="no adapter named 'round3'"):
        use_adapter(loaded, "round3")
    with pytest.raises(ModelError, match="already attached"):
        load_adapter(loaded, tmp_path / "round1")


def test_a_merged_adapter_generates_as_the_attached_one(tiny_model_dir, tmp_path):
    """load_merged: the adapter's weights folded into the base (no LoRA layers left) give the
    attached adapter's greedy outputs and, with the same seed, its samples (fp32)."""
    config = ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32")
    adapter = make_adapter(tiny_model_dir, tmp_path / "round1", seed=3)
    attached = load_model(config)
    load_adapter(attached, adapter)
    merged = load_merged(config, adapter)
    assert merged.merged_adapter == adapter and not merged.adapters and merged.active_adapter is None
    assert not any("lora" in name for name, _ in merged.model.named_modules())
    prompts = ["tell me something", "a much longer prompt " * 5]
    sampled = GenerationSettings(max_new_tokens=8, temperature=0.7, num_samples=3, batch_size=2, seed=0)
    for settings in (GREEDY, sampled):
        assert generate(merged, prompts, settings) == generate(attached, prompts, settings)
    base = generate(load_model(config), prompts, GREEDY)
    assert generate(merged, prompts, GREEDY) != base  # the adapter did change the model


def test_broken_adapter_folders(tiny_model, tmp_path):
    with pytest.raises(ModelError, match="no such adapter folder"):
        check_adapter_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no adapter_config.json"):
        check_adapter_folder(tmp_path / "empty")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "adapter_config.json").write_text("{broken")
    with pytest.raises(ModelError, match="corrupt adapter config"):
        check_adapter_folder(corrupt)
    (corrupt / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelError, match="adapter weights missing"):
        check_adapter_folder(corrupt)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_runs_in_bf16_by_default(tiny_model_dir):
    """On CUDA, dtype "auto" is bf16 (restpg.inference.hardware) and attention is SDPA's (the shared-prompt
    attention and the judge's shared prefixes are the CPU's: slower on a GPU); the E-step's sampling
    (a static cache), greedy decoding, streaming and the judge all run in it on the GPU."""
    from restpg.evaluation.reward import LLMJudge

    loaded = load_model(ModelConfig(model=str(tiny_model_dir), device="cuda"))
    assert loaded.dtype == torch.bfloat16 and loaded.device.type == "cuda"
    assert loaded.model.config._attn_implementation == "sdpa" and not LLMJudge(loaded).share_prefixes
    assert all(p.device.type == "cuda" and p.dtype == torch.bfloat16 for p in loaded.model.parameters())
    prompts = ["a short one", "a much longer prompt " * 5]
    sampled = generate(loaded, prompts, GenerationSettings(max_new_tokens=8, temperature=0.7, num_samples=3, seed=0))
    assert [len(s) for s in sampled] == [3, 3] and all(0 < g.new_tokens <= 8 for s in sampled for g in s)
    greedy = generate(loaded, prompts, GREEDY)
    assert list(stream_generate(loaded, prompts[0], GREEDY))[-1].text == greedy[0][0].text
    scores = LLMJudge(loaded, batch_size=2).score(prompts, ["a reference", "another"], ["an answer", "one more"])
    assert all(0 <= s.reward <= 1 for s in scores)


def test_adapter_for_another_model_is_refused(tiny_model_dir, default_model_dir, tmp_path):
    folder = make_adapter(default_model_dir, tmp_path / "big", seed=0)  # 576-wide LoRA on a 32-wide model
    loaded = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32"))
    with pytest.raises(ModelError, match="adapter does not fit model"):
        load_adapter(loaded, folder)


def test_real_default_model_generates(real_model):
    """SmolLM2-135M-Instruct itself, end to end: batched, chat template, real text out."""
    prompts = ["What is the capital of France? Answer in one word.", "Name a colour."]
    results = generate(real_model, prompts, GenerationSettings(max_new_tokens=12, temperature=0.0))
    assert "paris" in results[0][0].text.lower()
    assert all(r[0].new_tokens > 0 and r[0].text.strip() for r in results)


@pytest.mark.parametrize("device", DEVICES)
def test_streaming_yields_token_by_token_and_ends_like_generate(tiny_model_on, device):
    tiny_model = tiny_model_on(device)
    settings = GenerationSettings(max_new_tokens=12, temperature=0.0)
    updates = list(stream_generate(tiny_model, "Write a short review.", settings))
    final = updates[-1]
    batch = generate(tiny_model, ["Write a short review."], settings)[0][0]
    assert (final.text, final.new_tokens, final.truncated, final.stopped) == (
        batch.text,
        batch.new_tokens,
        batch.truncated,
        False,
    )
    counts = [u.new_tokens for u in updates[:-1]]
    assert counts == sorted(counts) and len(counts) >= 2  # grew one chunk at a time


def test_streaming_stops_when_asked(tiny_model):
    import threading

    stop = threading.Event()
    seen = []
    for update in stream_generate(
        tiny_model, "Write a long review.", GenerationSettings(max_new_tokens=200, temperature=0.0), stop
    ):
        seen.append(update)
        if update.new_tokens >= 3:
            stop.set()
    assert seen[-1].stopped and not seen[-1].truncated and seen[-1].new_tokens < 10


def test_streaming_refuses_an_overlong_prompt(tiny_model):
    with pytest.raises(PromptTooLongError):
        next(stream_generate(tiny_model, "word " * 100, GenerationSettings(max_input_tokens=20)))


@pytest.mark.parametrize("which", ["tiny_model", "real_model"])
def test_shared_prefill_for_several_samples_matches_separate_runs(which, request):
    loaded = request.getfixturevalue(which)
    prompts = ["Write one sentence about tents.", "Summarize this user's style: short, funny, mentions kids often."]
    greedy = GenerationSettings(max_new_tokens=10, temperature=0.0, batch_size=2)
    alone = [generate(loaded, [p], greedy)[0][0].text for p in prompts]
    shared = generate(
        loaded, prompts, GenerationSettings(max_new_tokens=10, temperature=0.0, batch_size=2, num_samples=3)
    )
    assert [[g.text for g in samples] for samples in shared] == [[text] * 3 for text in alone]
