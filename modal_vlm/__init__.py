"""modal-vlm: active learning with vision-language models, as a modAL plugin.

>>> from modAL.models import ActiveLearner
>>> from modal_vlm import ClipPromptClassifier, cec_query
>>> learner = ActiveLearner(estimator=ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit"),
...                         query_strategy=cec_query)
"""
from .backbones import create_backbone, get_backbone, list_backbones, register_backbone
from .cache import clear_memory_cache
from .classifier import ClipPromptClassifier
from .compat import patch_modal
from .embedding_pool import EmbeddingPool
from .strategies import (badge_query, cec_query, coreset_query, entropy_query, get_strategy,
                         least_confidence_query, list_strategies, margin_query, pcb, random_query)

patch_modal()

__version__ = "0.1.0.dev0"

__all__ = [
    "ClipPromptClassifier",
    "EmbeddingPool",
    "badge_query",
    "cec_query",
    "clear_memory_cache",
    "coreset_query",
    "create_backbone",
    "entropy_query",
    "get_backbone",
    "get_strategy",
    "least_confidence_query",
    "list_backbones",
    "list_strategies",
    "margin_query",
    "patch_modal",
    "pcb",
    "random_query",
    "register_backbone",
]
