"""The model card's README: how to load each artefact kind, and the LoRA / checkpoint facts."""

from __future__ import annotations

from obliviate.models.card import ADAPTER, FULL_MODEL, WRAPPER, card_markdown


def _card(**extra):
    return {"stage": "unlearn", "method": "npo", "source_model": "/m/target", **extra}


def test_full_model_loads_with_transformers():
    text = card_markdown(_card(artefact=FULL_MODEL))
    assert 'AutoModelForCausalLM.from_pretrained("<this directory>")' in text
    assert "AutoPeftModelForCausalLM" not in text


def test_adapter_loads_with_peft_and_says_what_it_trained():
    lora = {
        "r": 8,
        "alpha": 16.0,
        "target_modules": ["q_proj", "v_proj"],
        "trainable_share": 0.0125,
    }
    text = card_markdown(_card(artefact=ADAPTER, lora=lora))
    assert 'AutoPeftModelForCausalLM.from_pretrained("<this directory>")' in text
    assert "AutoModelForCausalLM.from_pretrained" not in text
    assert "- **LoRA**: rank 8, alpha 16.0 on q_proj, v_proj, 1.25% of the weights trained" in text


def test_wrapper_loads_through_obliviate():
    text = card_markdown(_card(artefact=WRAPPER))
    assert 'load_artefact("<this directory>")' in text
    assert "from_pretrained" not in text


def test_selected_checkpoint_is_named():
    sel = {"chosen_step": 16, "criterion": "max forget_quality", "satisfied": False}
    text = card_markdown(_card(selection=sel))
    assert "- **Checkpoint**: step 16, chosen by `max forget_quality` (constraints not met)" in text
    sel["satisfied"] = True
    assert "(constraints not met)" not in card_markdown(_card(selection=sel))
