"""The :class:`~modal_vlm.backbones.base.TextTower` implementations: open_clip's causal
text transformer and Hugging Face encoders (BERT-like, mean pooling)."""
from __future__ import annotations

import torch
from torch import nn

from .base import TextTower


class OpenClipTextTower(TextTower):
    """open_clip's text transformer (``CLIP`` or a ``TextTransformer`` tower).

    Prompts are cut after the longest end-of-text token: with a causal attention mask the
    positions after it cannot change the pooled feature, so this is exact and saves most of
    the 77-token context on short class prompts.

    Parameters
    ----------
    model : open_clip.CLIP or open_clip.transformer.TextTransformer
        Holds ``token_embedding``, ``positional_embedding``, ``transformer``, ``ln_final``,
        ``text_projection`` and ``attn_mask`` (open_clip keeps the same names on both).
    tokenizer : callable
        ``open_clip.get_tokenizer(model_name)``.
    """

    def __init__(self, model, tokenizer):
        super().__init__()
        if getattr(model, "attn_mask", None) is None or getattr(model, "text_pool_type", "argmax") != "argmax":
            raise ValueError(
                "Only causal open_clip text transformers pooled at the end-of-text token are "
                "supported (CLIP-style); got a bidirectional or differently pooled tower."
            )
        self.token_embedding = model.token_embedding
        self.positional_embedding = model.positional_embedding
        self.transformer = model.transformer
        self.ln_final = model.ln_final
        self.text_projection = model.text_projection
        self.register_buffer("attn_mask", model.attn_mask, persistent=False)
        self.tokenizer = tokenizer
        self.width = self.token_embedding.embedding_dim

    def tokenize(self, texts):
        ids = self.tokenizer(list(texts))
        length = int(ids.argmax(dim=-1).max()) + 1  # end-of-text has the highest id
        ids = ids[:, :length]
        return ids, torch.ones_like(ids)

    def embed_tokens(self, token_ids):
        return self.token_embedding(token_ids)

    def encode_embeddings(self, embeddings, token_ids, attention_mask):
        length = embeddings.shape[1]
        x = embeddings + self.positional_embedding[:length]
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), token_ids.argmax(dim=-1)]
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x if self.text_projection is None else x @ self.text_projection


class HFTextTower(TextTower):
    """A Hugging Face encoder with mean pooling (sentence-transformers style).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        An encoder taking ``inputs_embeds`` (BERT, MiniLM, ...).
    tokenizer : transformers.PreTrainedTokenizerBase
        Its tokenizer; it must add a leading special token (``[CLS]``).
    max_length : int
        Longest tokenized prompt.
    """

    def __init__(self, model, tokenizer, max_length=77):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.width = model.get_input_embeddings().embedding_dim

    def tokenize(self, texts):
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return enc["input_ids"], enc["attention_mask"]

    def embed_tokens(self, token_ids):
        return self.model.get_input_embeddings()(token_ids)

    def encode_embeddings(self, embeddings, token_ids, attention_mask):
        hidden = self.model(inputs_embeds=embeddings, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
