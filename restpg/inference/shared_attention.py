"""Sampling attention that reads a prompt's keys and values once for all of its m samples.

In the E-step each prompt is continued m times. Copying its prompt's cache to m rows makes every
decoding step read the prompt's keys and values m times: on a CPU, attention in decoding is bound by
memory reads, and the prompt is most of what is read. Here the prompt's cache is kept once per
prompt; at each step the m rows' queries attend to it together (one matrix product for m x heads
queries), then each row attends to its own new tokens, and the two parts are joined exactly through
their log-sum-exp (the softmax over the concatenation). On a CPU both parts run through torch's fused
flash-attention kernel, which returns that log-sum-exp (:func:`attend`). The model's other calls are unchanged: the
attention implementation registered here is torch's SDPA, transformers' own function, for every
call whose keys are not this cache's parts (tests/inference/test_shared_attention.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .shared_prefix import shares_prefixes

NAME = "restpg_shared_prompt"
# Architectures whose attention hands the cache's keys and values straight to the attention function
# (transformers 5: read in their modeling files); others keep SDPA and the copied cache.
MODEL_TYPES = frozenset({"llama", "gemma", "mistral", "qwen2", "qwen3", "phi3"})


@dataclass
class PromptAndNew:
    """One layer's keys and values as this cache hands them to attention: the prompts' (one row per
    prompt, with their padding as a bias) and the rows' new tokens so far."""

    prompt_keys: torch.Tensor  # (prompts, kv heads, prompt length, head dim)
    prompt_values: torch.Tensor
    prompt_bias: torch.Tensor  # (prompts, 1, 1, prompt length): 0 on real tokens, -inf on padding (prompt_bias)
    new_keys: torch.Tensor  # (rows, kv heads, new tokens, head dim)
    new_values: torch.Tensor


def prompt_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A padding mask (prompts, length) as an additive bias (prompts, 1, 1, length): 0 or -inf."""
    bias = torch.zeros(mask.shape[0], 1, 1, mask.shape[1], dtype=dtype, device=mask.device)
    return bias.masked_fill_(~mask.bool()[:, None, None, :], float("-inf"))


def attend(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None, scale: float):
    """softmax(query keys^T * scale + bias) values, and each query's log-sum-exp (float32, with a last
    dimension of 1). On a CPU through torch's fused flash-attention kernel, which returns the
    log-sum-exp too (bench/profile_decode.py: attention's products and softmax were the second cost
    of a decoding step); elsewhere in plain products."""
    if query.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, keys, values, 0.0, False, attn_mask=bias, scale=scale
        )
        return out, lse.unsqueeze(-1)
    scores = (query @ keys.transpose(-1, -2)).float() * scale
    if bias is not None:
        scores = scores + bias
    return torch.softmax(scores, dim=-1).to(query.dtype) @ values, torch.logsumexp(scores, dim=-1, keepdim=True)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        if not isinstance(key, PromptAndNew):
            return sdpa_attention_forward(
                module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
            )
        return shared_prompt_attention(query, key, scaling), None

    AttentionInterface.register(NAME, attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # masks as for SDPA: other calls see no change


def use_shared_prompt_attention(model) -> bool:
    """Switch a freshly loaded model that attends with SDPA on a CPU to this implementation (the
    same SDPA for all its calls but sampling's); True when it did.

    CPU only. On a CPU decoding attention is bound by memory reads, and reading each prompt once
    pays (1.08x in fp32, 1.31x in bf16: bench/bench.py --only sampling). On CUDA, SDPA's fused
    kernel over the copied cache is faster: on an H200 the copied cache sampled 14,340 tokens/s
    and this path 8,668 (0.60x; bench/gpu_check.sh, 16 prompts x m = 32 per batch)."""
    from transformers import AttentionInterface

    if model.device.type != "cpu":
        return False
    config = model.config  # (a sliding window's keys are not all of the prompt's: shares_prefixes)
    if config.model_type not in MODEL_TYPES or config._attn_implementation != "sdpa" or not shares_prefixes(model):
        return False

    if NAME not in AttentionInterface._global_mapping:
        _register()
    model.set_attn_implementation(NAME)
    return True


def shared_prompt_attention(query: torch.Tensor, parts: PromptAndNew, scaling: float | None) -> torch.Tensor:
    """Attention of one new token per row; rows are prompt-major (prompt p's samples are rows
    p*m .. p*m + m-1). Returns (rows, 1, heads, head dim), as transformers' attention functions do."""
    rows, heads, q_length, dim = query.shape
    prompts, kv_heads, _, _ = parts.prompt_keys.shape
    if q_length != 1:
        raise ValueError(f"shared-prompt attention decodes one token per row, got {q_length}")
    m, group = rows // prompts, heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    # the prompt part: every sample's every query head of one key head, together
    q = query.reshape(prompts, m, kv_heads, group, dim).transpose(1, 2).reshape(prompts, kv_heads, m * group, dim)
    prompt_out, prompt_lse = attend(q, parts.prompt_keys, parts.prompt_values, parts.prompt_bias, scale)
    # back to rows: (rows, kv heads, group, ...)
    prompt_out = (
        prompt_out.reshape(prompts, kv_heads, m, group, dim).transpose(1, 2).reshape(rows, kv_heads, group, dim)
    )
    prompt_lse = prompt_lse.reshape(prompts, kv_heads, m, group, 1).transpose(1, 2).reshape(rows, kv_heads, group, 1)
    # each row's own new tokens
    q_rows = query.reshape(rows, kv_heads, group, dim)
    new_out, new_lse = attend(q_rows, parts.new_keys, parts.new_values, None, scale)
    total = torch.logaddexp(prompt_lse, new_lse)
    out = torch.exp(prompt_lse - total) * prompt_out.float() + torch.exp(new_lse - total) * new_out.float()
    return out.to(query.dtype).reshape(rows, 1, heads, dim)


def shared_prompt_cache(prompt_cache, prompt_mask: torch.Tensor, samples: int, new_tokens: int):
    """A cache for decoding ``samples`` rows per prompt from ``prompt_cache`` (a transformers cache
    filled with the prompts, one row each; ``prompt_mask`` their padding), with room for
    ``new_tokens`` new tokens per row."""
    from transformers import DynamicCache

    class SharedPromptCache(DynamicCache):
        def __init__(self):
            super().__init__()
            self.prompt = [(layer.keys, layer.values) for layer in prompt_cache.layers]
            self.prompt_bias = prompt_bias(prompt_mask, self.prompt[0][0].dtype)
            rows = prompt_mask.shape[0] * samples
            self.new = [
                (
                    k.new_empty(rows, k.shape[1], new_tokens, k.shape[3]),
                    v.new_empty(rows, v.shape[1], new_tokens, v.shape[3]),
                )
                for k, v in self.prompt
            ]
            self.lengths = [0] * len(self.prompt)

        def update(self, key_states, value_states, layer_idx, *args, **kwargs):
            start, n = self.lengths[layer_idx], key_states.shape[2]
            keys, values = self.new[layer_idx]
            keys[:, :, start : start + n] = key_states
            values[:, :, start : start + n] = value_states
            self.lengths[layer_idx] = start + n
            prompt_keys, prompt_values = self.prompt[layer_idx]
            parts = PromptAndNew(
                prompt_keys, prompt_values, self.prompt_bias, keys[:, :, : start + n], values[:, :, : start + n]
            )
            return parts, parts

        def get_seq_length(self, layer_idx: int = 0) -> int:
            return self.prompt_bias.shape[-1] + self.lengths[layer_idx]

        def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
            return self.get_seq_length(layer_idx) + query_length, 0

    return SharedPromptCache()
