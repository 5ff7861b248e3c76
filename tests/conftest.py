"""Shared fixtures: a tiny config-built model (fast unit tests) and the real default model."""

from __future__ import annotations

import pytest
import torch

from restpg.models import DEFAULT_MODEL, ModelConfig, convert_default_model, load_model, load_tokenizer


@pytest.fixture(scope="session")
def default_model_dir():
    """The real default model (SmolLM2-135M-Instruct), converted from its GGUF once per machine."""
    return convert_default_model()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, default_model_dir):
    """A 2-layer Llama with random weights and the real model's tokenizer and chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(str(default_model_dir))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
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
def real_model(default_model_dir):
    return load_model(ModelConfig(model=DEFAULT_MODEL, device="cpu", dtype="float32"))


@pytest.fixture(scope="session")
def metrics():
    from restpg.metrics import LexicalMetrics

    return LexicalMetrics()
