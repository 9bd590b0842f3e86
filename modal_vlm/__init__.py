"""modal-vlm: active learning with vision-language models, as a modAL plugin.

>>> from modAL.models import ActiveLearner
>>> from modal_vlm import ClipPromptClassifier, cec_query
>>> learner = ActiveLearner(estimator=ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit"),
...                         query_strategy=cec_query)

The names below are imported on first use, so ``import modal_vlm`` (and ``modal-vlm
--help``) does not load torch. ``import modal_vlm`` makes modAL work with today's
scikit-learn, pandas and NumPy: the shims of :mod:`modal_vlm.compat` are applied to modAL's
modules as they are imported, whether before or after ``modal_vlm`` (an import hook:
:mod:`modal_vlm._modal_hook`).
"""
import importlib
import importlib.util

from . import _modal_hook

__version__ = "0.1.0"

#: Every public name and the submodule that defines it: what a user of the canonical loop
#: needs. The rest lives in the subpackages (:mod:`modal_vlm.strategies` for the baselines,
#: :mod:`modal_vlm.embeddings`, :mod:`modal_vlm.model`, :mod:`modal_vlm.backbones`...).
_EXPORTS = {
    "ClipPromptClassifier": "model",
    "ClipLinearProbe": "model",
    "NONE": "sentinels",
    "cec_query": "strategies",
    "random_query": "strategies",
    "pcb": "strategies",
    "open_set": "strategies",
    "on_embeddings": "strategies",
    "get_strategy": "strategies",
    "list_strategies": "strategies",
    "create_backbone": "backbones",
    "list_backbones": "backbones",
    "register_backbone": "backbones",
    "run_active_learning": "experiment",
    "ModalVLMError": "exceptions",
}

__all__ = list(_EXPORTS)


_modal_hook.install()


def __getattr__(name):
    if name not in _EXPORTS:
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f".{name}", __name__)  # modal_vlm.datasets after import modal_vlm
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    importlib.import_module(".compat", __name__).patch_modal()
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
