import pytest
import torch

from helpers import DEVICES
from restpg.inference.models import GenerationSettings, ModelConfig, generate, load_model
from restpg.inference.shared_attention import NAME, PromptAndNew, prompt_bias, shared_prompt_attention


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_equals_sdpa_over_the_copied_prompt_and_the_new_tokens(dtype, device):
    """3 prompts x m = 4 samples, 6 query heads on 2 key heads, left-padded prompts: the same output
    as SDPA over each row's own copy of its prompt's keys followed by its new tokens."""
    torch.manual_seed(0)
    prompts, m, kv_heads, group, dim, prompt_length, new = 3, 4, 2, 3, 16, 9, 5
    rows, heads = prompts * m, kv_heads * group
    prompt_mask = (torch.arange(prompt_length)[None, :] >= torch.tensor([[0], [3], [7]])).to(device)  # 0, 3, 7 pads
    parts = PromptAndNew(
        torch.randn(prompts, kv_heads, prompt_length, dim, dtype=dtype),
        torch.randn(prompts, kv_heads, prompt_length, dim, dtype=dtype),
        prompt_bias(prompt_mask, dtype),
        torch.randn(rows, kv_heads, new, dim, dtype=dtype),
        torch.randn(rows, kv_heads, new, dim, dtype=dtype),
    )
    parts = PromptAndNew(**{name: part.to(device) for name, part in vars(parts).items()})
    query = torch.randn(rows, heads, 1, dim, dtype=dtype).to(device)
    ours = shared_prompt_attention(query, parts, 0.25)
    keys = torch.cat([parts.prompt_keys.repeat_interleave(m, 0), parts.new_keys], dim=2)
    values = torch.cat([parts.prompt_values.repeat_interleave(m, 0), parts.new_values], dim=2)
    mask = torch.cat(
        [prompt_mask.repeat_interleave(m, 0), torch.ones(rows, new, dtype=torch.bool, device=device)], dim=1
    )
    expected = torch.nn.functional.scaled_dot_product_attention(
        query.float(),
        keys.repeat_interleave(group, 1).float(),
        values.repeat_interleave(group, 1).float(),
        attn_mask=mask[:, None, None, :],
        scale=0.25,
    ).transpose(1, 2)
    assert ours.shape == (rows, 1, heads, dim) and ours.dtype == dtype and ours.device.type == device
    assert torch.allclose(ours.float(), expected, atol=1e-5 if dtype == torch.float32 else 2e-2)


def test_sampling_gives_the_same_tokens_as_the_copied_cache(tiny_model_dir):
    """Same seed, same prompts: sampling with each prompt's cache read once gives the tokens of the
    path that copies the prompt's cache to every sample (a static cache, plain SDPA). CPU only: on
    CUDA models keep SDPA (test_models.py::test_cuda_runs_in_bf16_by_default)."""
    shared = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32"))
    copied = load_model(ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32"))
    assert shared.model.config._attn_implementation == NAME
    copied.model.set_attn_implementation("sdpa")
    prompts = ["a short one", "a much longer prompt " * 5, "mid length prompt"]
    settings = GenerationSettings(max_new_tokens=12, temperature=0.7, num_samples=3, batch_size=3, seed=0)
    ours, theirs = generate(shared, prompts, settings), generate(copied, prompts, settings)
    assert [[g.text for g in s] for s in ours] == [[g.text for g in s] for s in theirs]
    assert len({g.text for s in ours for g in s}) > 3  # sampled: the samples differ


def test_models_it_cannot_serve_keep_sdpa():
    """A sliding-window model (its cache holds a window, not the whole prompt) keeps plain SDPA."""
    from helpers import sliding_window_model
    from restpg.inference.shared_attention import use_shared_prompt_attention

    model = sliding_window_model()
    assert model.config._attn_implementation == "sdpa"
    assert not use_shared_prompt_attention(model) and model.config._attn_implementation == "sdpa"
