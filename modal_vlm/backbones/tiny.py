"""Tiny randomly initialised backbones for tests: fast, deterministic, no download.

* ``tiny-vit``: an open_clip config (a 1-layer ViT and a 1-layer causal text transformer,
  32-d), registered with open_clip itself, so it runs through exactly the code path of
  ``ViT-B-32``.
* ``tiny-vit-bert``: the same image tower with a 1-layer BERT text tower (Hugging Face
  ``transformers``, MiniLM's tokenizer), the code path of the offline reference model.

Their predictions are meaningless; they exist to exercise the library.
"""
from __future__ import annotations

from pathlib import Path

import open_clip
import torch

from .base import Backbone
from .open_clip_backbone import RANDOM, create_open_clip_backbone
from .text_towers import HFTextTower

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)


def create_tiny_vit_bert(pretrained=None, *, device="cpu", image_size=None) -> Backbone:
    """``tiny-vit`` with a 1-layer random BERT text tower (see module docstring)."""
    from transformers import BertConfig, BertModel

    from .conse import minilm_tokenizer

    if pretrained not in (None, RANDOM):
        raise ValueError(f"'tiny-vit-bert' has random weights only; got pretrained={pretrained!r}.")
    clip = create_open_clip_backbone("tiny-vit", RANDOM, device=device, image_size=image_size)
    tokenizer = minilm_tokenizer()
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        bert = BertModel(config, add_pooling_layer=False).to(device)
    return Backbone(
        visual=clip.visual,
        text=HFTextTower(bert, tokenizer),
        preprocess=clip.preprocess,
        train_preprocess=clip.train_preprocess,
        logit_scale=clip.logit_scale,
        key=clip.key.replace("tiny-vit|", "tiny-vit-bert|", 1),
    )
