"""modal-vlm: active learning with vision-language models, as a modAL plugin.

>>> from modAL.models import ActiveLearner
>>> from modal_vlm import ClipPromptClassifier
>>> learner = ActiveLearner(estimator=ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit"))
"""
from .backbones import create_backbone, get_backbone, list_backbones, register_backbone
from .cache import clear_memory_cache
from .classifier import ClipPromptClassifier
from .compat import patch_modal

patch_modal()

__version__ = "0.1.0.dev0"

__all__ = [
    "ClipPromptClassifier",
    "clear_memory_cache",
    "create_backbone",
    "get_backbone",
    "list_backbones",
    "patch_modal",
    "register_backbone",
]
