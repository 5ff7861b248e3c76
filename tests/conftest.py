"""Shared fixtures: a tiny config-built model (fast unit tests) and the real default model."""

from __future__ import annotations

import pytest
import torch

from restpg.inference import packed_linear
from restpg.inference.models import DEFAULT_MODEL, ModelConfig, convert_default_model, load_model, load_tokenizer


@pytest.fixture(scope="session", autouse=True)
def packing_pays():
    """Every CPU model the tests load packs its linear layers (restpg.inference.packed_linear), as on the CPU
    this project measured: which path a test takes must not hang on a timing."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(packed_linear, "packing_speedup", lambda *shape: 2.0)
        yield


@pytest.fixture(scope="session")
def default_model_dir():
    """The real default model (SmolLM2-135M-Instruct), converted from its GGUF once per machine."""
    return convert_default_model()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, default_model_dir):
    """A 2-layer Llama with random weights and the real model's tokenizer and chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(str(default_model_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    return load_model(ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32"))


@pytest.fixture(scope="session")
def tiny_model_on(tiny_model_dir, tiny_model):
    """The tiny model (fp32) on a device, loaded once per device: ``tiny_model_on("cuda")``."""
    loaded = {"cpu": tiny_model}

    def on(device: str):
        if device not in loaded:
            loaded[device] = load_model(ModelConfig(model=str(tiny_model_dir), device=device, dtype="float32"))
        return loaded[device]

    return on


@pytest.fixture(scope="session")
def real_model(default_model_dir):
    return load_model(ModelConfig(model=DEFAULT_MODEL, device="cpu", dtype="float32"))


@pytest.fixture(scope="session")
def metrics():
    from restpg.evaluation.metrics import LexicalMetrics

    return LexicalMetrics()


@pytest.fixture(scope="session")
def format_model_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model, fully fine-tuned to write REST-PG's format (opening, a reasoning bullet, the
    transition phrase, the start of the user's text) on the training prompts of
    :func:`format_config`, as an instruction model would after stage 2. A random model never writes
    the transition phrase, so without this no sample of the REST-PG path would ever be kept."""
    from transformers import AutoModelForCausalLM

    from helpers import FORMAT_REASONING, format_config
    from restpg.inference.models import chat_text, load_tokenizer, prompt_token_counter
    from restpg.training.em import _sft_examples, load_split
    from restpg.training.reasoning import ReasoningPath
    from restpg.training.train import predicted_positions, weighted_completion_loss

    tokenizer = load_tokenizer(str(tiny_model_dir))
    config = format_config(tiny_model_dir)
    records = load_split(config, "train", config.train_users)
    paths = {r.record_id: ReasoningPath(r.record_id, "tests", FORMAT_REASONING, 0, False) for r in records}
    rows = []
    for example in _sft_examples(config, records, paths, prompt_token_counter(tokenizer)):
        prompt = tokenizer(chat_text(tokenizer, example.prompt), add_special_tokens=False)["input_ids"]
        completion = tokenizer(example.completion, add_special_tokens=False)["input_ids"][:40]
        rows.append((prompt + completion, [-100] * len(prompt) + completion))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([i + [0] * (width - len(i)) for i, _ in rows])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in rows])
    labels = torch.tensor([t + [-100] * (width - len(t)) for _, t in rows])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    positions = predicted_positions(labels)
    for _ in range(150):
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=positions).logits
        weighted_completion_loss(logits, labels[:, positions + 1], torch.ones(len(rows))).backward()
        optimizer.step()
        optimizer.zero_grad()
    folder = tmp_path_factory.mktemp("format-model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_config(tiny_model_dir):
    from helpers import TINY_TRAIN
    from restpg.training.em import EMConfig

    # ReST-EM mechanics (no reasoning: a random model never writes the reasoning format), judge reward
    # from the tiny model with tau = 0 so every non-empty answer passes.
    return EMConfig(
        tasks=("product_review",),
        train_users=2,
        eval_users=1,
        model=str(tiny_model_dir),
        reasoning=False,
        rounds=2,
        samples_per_input=2,
        reward="judge",
        tau=0.0,
        max_item_words=8,
        max_new_tokens=6,
        generation_batch_size=2,
        sft=TINY_TRAIN,
        mstep=TINY_TRAIN,
        device="cpu",
        dtype="float32",
        keep_truncated=True,
    )  # a random model never stops by itself
