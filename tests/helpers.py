"""Small LongLaMP-shaped records for unit tests (the shipped sample is tested on its own)."""

from restpg.longlamp import validate_rows


def review_row(user="U1", request="Generate the review text for a soft play tent for toddlers.", profile=None):
    return {
        "reviewerId": user,
        "input": request,
        "output": "My kids adore this tent. The poles are covered so nobody gets hurt.",
        "profile": profile if profile is not None else [
            {"overall": 5.0, "summary": "Safe train", "description": "Wooden toy train set.",
             "reviewText": "My kids love it. Safety first: no small parts, smooth edges."},
            {"overall": 4.0, "summary": "Good blender", "description": "A countertop blender.",
             "reviewText": "Smoothies every morning. The lid locks."},
            {"overall": 2.0, "summary": "Sharp toy blocks", "description": "Plastic blocks.",
             "reviewText": "Sharp edges, my toddler cut a finger. Not safe for kids."},
        ],
    }


def review_record(**kwargs):
    return validate_rows([review_row(**kwargs)], "product_review", "test").records[0]


def make_adapter(model_dir, folder, seed=0):
    """A LoRA adapter with random (non-zero) weights for ``model_dir``, saved in ``folder``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(folder)
    return folder
