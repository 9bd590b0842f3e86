"""CoOp's prompt learner (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV
2022), written against the :class:`~modal_vlm.backbones.TextTower` interface so it serves
open_clip's text transformer and Hugging Face encoders alike.

A class prompt is ``[START] v_1 ... v_M {class name}{suffix} [END]``: the ``M = n_ctx`` context
vectors ``v`` replace the input embeddings of placeholder tokens and are the only trained
parameters; the text encoder is frozen. ``suffix`` is the fixed text after the class name
(CoOp's ``"."``; with a template such as ``"a photo of a {}, a type of pet."`` the part after
``{}``), so a context initialised from the template's words reproduces the zero-shot prompt
exactly.
"""
from __future__ import annotations

import torch
from torch import nn

PLACEHOLDER = "X"
#: ``ctx_init`` value that initialises the context from the zero-shot template's words.
FROM_TEMPLATE = "template"


def split_template(template: str) -> tuple[str, str]:
    """The text before and after ``{}`` in a zero-shot template.

    Parameters
    ----------
    template : str
        A prompt with one ``{}`` for the class name (literal braces as ``{{`` and ``}}``).

    Returns
    -------
    prefix, suffix : str
        ``prefix`` stripped of surrounding spaces (the words a context initialised from the
        template starts from); ``suffix`` as it is (the fixed text after the class name).

    Examples
    --------
    >>> split_template("a photo of a {}.")
    ('a photo of a', '.')
    >>> split_template("a {{rare}} {} photo")
    ('a {rare}', ' photo')
    """
    # format() resolves the escaped braces; NUL cannot occur in a prompt.
    prefix, suffix = template.format("\0").split("\0")
    return prefix.strip(), suffix


def class_prompt_names(class_names) -> list[str]:
    """Class names as they go into a prompt (underscores become spaces)."""
    return [str(name).replace("_", " ") for name in class_names]


class PromptLearner(nn.Module):
    """Learnable context vectors + a frozen text tower -> class text features.

    Parameters
    ----------
    text : TextTower
        Frozen text encoder.
    class_names : list of str
        One prompt per class.
    n_ctx : int
        Number of context vectors (ignored when ``ctx_init`` is given: its token count).
    class_specific_ctx : bool
        One context per class (CoOp's CSC) instead of one shared by all classes.
    ctx_init : str, optional
        Initialise the context from the token embeddings of this text (e.g. ``"a photo of
        a"``) instead of N(0, 0.02); ``"template"`` takes the words of ``template`` before
        ``{}``, so the untrained prompt is the zero-shot prompt (a template without words
        before ``{}`` falls back to N(0, 0.02) with ``n_ctx`` vectors).
    generator : torch.Generator, optional
        Random source of the N(0, 0.02) initialisation.
    template : str, default="a photo of a {}."
        The zero-shot prompt: its text after ``{}`` follows the class name in every prompt,
        and ``ctx_init="template"`` starts the context from its words before ``{}``.

    Examples
    --------
    >>> from modal_vlm.backbones import get_backbone
    >>> learner = PromptLearner(get_backbone("tiny-vit").text, ["cat", "dog"], n_ctx=4)
    >>> learner().shape
    torch.Size([2, 32])
    """

    def __init__(self, text, class_names, n_ctx=16, class_specific_ctx=True, ctx_init=None, generator=None,
                 template="a photo of a {}."):
        super().__init__()
        names = class_prompt_names(class_names)
        prefix, suffix = split_template(template)
        if ctx_init == FROM_TEMPLATE:
            ctx_init = prefix or None
        if ctx_init:
            init_ids, init_mask = text.tokenize([ctx_init])
            n_ctx = int(init_mask[0].sum()) - 2  # minus the start and end tokens
            context_text = ctx_init
        else:
            if int(n_ctx) < 1:
                raise ValueError(f"n_ctx must be >= 1, got {n_ctx}.")
            n_ctx = int(n_ctx)
            context_text = " ".join([PLACEHOLDER] * n_ctx)
            init_ids = None
        ids, mask = text.tokenize([f"{context_text} {name}{suffix}" for name in names])
        expected = text.tokenize([context_text])[0][0, 1:1 + n_ctx]
        if ids.shape[1] < n_ctx + 2 or not torch.equal(ids[:, 1:1 + n_ctx], expected.expand(len(names), -1)):
            raise ValueError(
                f"The tokenizer does not keep the {n_ctx} context tokens apart from the class names; "
                "choose another ctx_init."
            )
        with torch.no_grad():
            embeddings = text.embed_tokens(ids)
        self.text = text
        self.n_ctx = n_ctx
        self.register_buffer("token_ids", ids, persistent=False)
        self.register_buffer("attention_mask", mask, persistent=False)
        self.register_buffer("prefix", embeddings[:, :1].clone(), persistent=False)
        self.register_buffer("suffix", embeddings[:, 1 + n_ctx:].clone(), persistent=False)
        shape = (len(names), n_ctx, text.width) if class_specific_ctx else (n_ctx, text.width)
        if init_ids is not None:
            ctx = embeddings[0, 1:1 + n_ctx].detach().clone().expand(*shape).clone()
        else:
            ctx = torch.empty(shape).normal_(0.0, 0.02, generator=generator)
        self.ctx = nn.Parameter(ctx.to(embeddings.device))

    def forward(self) -> torch.Tensor:
        """Class text features ``(C, D)``, not normalised."""
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.expand(len(self.prefix), -1, -1)
        embeddings = torch.cat([self.prefix, ctx, self.suffix], dim=1)
        return self.text.encode_embeddings(embeddings, self.token_ids, self.attention_mask)
