"""The fit modes of the estimators (``fit_mode``): what each accepts as labels, the training
set it builds and the loss it trains on.

* ``"supervised"``: cross-entropy on the labeled samples; unlabeled ones are refused.
* ``"ueo"``: plus ``lambda_ueo`` times UEO's loss (Liang et al., ICML 2024) on the unlabeled
  samples and the "none of these classes" ones, each weighted by its zero-shot confidence
  (:func:`~modal_vlm.model.losses.ueo_sample_weights`), fixed once per fit.
* ``"infomax"``: the same with equal sample weights.

Each mode is a small object the estimator's skorch hooks delegate to.

Examples
--------
>>> from modal_vlm.model.fit_modes import get_fit_mode
>>> get_fit_mode("ueo").trains_unlabeled, get_fit_mode("supervised").trains_unlabeled
(True, False)
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ..exceptions import InvalidParameterError
from ..embeddings.inputs import as_image_items
from ..sentinels import NONE, UNLABELED
from .losses import ueo_loss, ueo_sample_weights
from .prompted_clip import zero_shot_text_features
from .schedule import COOP_SHOT_SCHEDULE, SHOT_SCHEDULE
from .training_data import SemiSupervisedBatchSampler, TrainingSet, dataset_labels

#: UEO's training logits use CLIP's fixed scale, whatever the backbone's own.
UEO_LOGIT_SCALE = 100.0


class Supervised:
    """Labeled samples only: cross-entropy (the labels "none of the classes" have no loss term)."""

    name = "supervised"
    #: Whether unlabeled samples (-1) and "none" samples (-2) take part in training.
    trains_unlabeled = False
    #: Epochs of ``max_epochs="auto"`` by labels per class (:func:`~modal_vlm.model.schedule.shot_schedule_epochs`).
    shot_schedule = SHOT_SCHEDULE

    def check_labels(self, labels) -> None:
        """Refuse what this mode cannot learn from (``labels``: indices, -1 unlabeled)."""
        if np.any(np.asarray(labels) == UNLABELED):
            raise InvalidParameterError("y == -1 marks unlabeled samples; use fit_mode='ueo' or 'infomax' to learn "
                                        "from them.")

    def check_unlabeled_input(self) -> None:
        """Refuse ``fit(..., X_unlabeled=...)`` where it would be ignored."""
        raise InvalidParameterError("X_unlabeled is used by fit_mode='ueo' or 'infomax' only.")

    def learns_nothing(self, labels) -> bool:
        """Whether the training labels hold nothing to learn from (only "none" samples)."""
        return not bool((labels >= 0).any())

    def sample_weights(self, net, embeddings, labels) -> np.ndarray:
        """The weight each training sample carries into the unlabeled loss (1: unused)."""
        return np.ones(len(labels), dtype=np.float32)

    def training_set(self, net, X, labels) -> TrainingSet:
        """``net``'s training samples: the frozen encoder's embeddings of the images ``X``, or
        the images themselves where the encoder's normalisation layers train (augmented)."""
        frozen = net.frozen_transform(X)
        weights = self.sample_weights(net, frozen, labels)
        if not trains_visual_norm(net):
            return TrainingSet(torch.from_numpy(frozen), labels, weights)
        return TrainingSet(as_image_items(X), labels, weights, transform=net.backbone_.train_preprocess)

    def batch_sampler(self, net, dataset) -> SemiSupervisedBatchSampler:
        """One batching rule for every mode: ``net.batch_size`` labeled samples per step, joined
        by ``net.unlabeled_batch_size`` unlabeled ones where the mode trains on them (-1: all
        in one batch), seeded by ``random_state`` (same seed, same mini-batches, same fit).
        Supervised training has no loss for "none" samples: they are never drawn."""
        labels = dataset_labels(dataset)
        n = max(1, len(labels))
        return SemiSupervisedBatchSampler(
            labels, n if net.batch_size == -1 else net.batch_size,
            n if net.unlabeled_batch_size == -1 else net.unlabeled_batch_size, net._seed(),
            unlabeled_labels=(UNLABELED, NONE) if self.trains_unlabeled else ())

    def data_loss(self, net, y_pred, y_true, X, labeled_loss):
        """The criterion on the samples labeled with a class (``labeled_loss(y_pred, y_true)``,
        skorch's loss where every sample is), plus the mode's unlabeled term."""
        labels = torch.as_tensor(y_true).to(y_pred.device)
        labeled = labels >= 0  # a class; not UNLABELED, not NONE
        if bool(labeled.all()):
            return labeled_loss(y_pred, y_true)
        loss = y_pred.new_zeros(())
        if labeled.any():
            loss = net.criterion_(y_pred[labeled], labels[labeled])
        if self.trains_unlabeled and isinstance(X, Mapping):
            # Unlabeled and "none" samples: UEO's loss (NONE's weight is the lowest, 1 / C).
            logits = y_pred[~labeled] * (UEO_LOGIT_SCALE / net.module_.logit_scale)
            loss = loss + net.lambda_ueo * ueo_loss(logits, X["weight"].to(y_pred.device)[~labeled])
        return loss


class InfoMax(Supervised):
    """Labeled cross-entropy plus UEO's loss on the unlabeled samples, equal sample weights."""

    name = "infomax"
    trains_unlabeled = True
    shot_schedule = COOP_SHOT_SCHEDULE   # CoOp's: the shorter schedule was measured for supervised fits only

    def check_labels(self, labels) -> None:
        pass

    def check_unlabeled_input(self) -> None:
        pass

    def learns_nothing(self, labels) -> bool:
        return False


class UEO(InfoMax):
    """InfoMax with UEO's sample weights: each unlabeled sample's zero-shot confidence."""

    name = "ueo"

    def sample_weights(self, net, embeddings, labels) -> np.ndarray:
        # Fixed once, from the zero-shot model (the paper's recipe).
        zero_shot = zero_shot_text_features(net.backbone_.text, net.class_names, net.template)
        cosine = torch.from_numpy(embeddings) @ zero_shot.cpu().T
        weights = ueo_sample_weights(cosine, net.ueo_temperature).numpy()
        # A person said "none of these classes": the weight of certain OOD, the lowest
        # maximum softmax probability there is.
        weights[labels == NONE] = 1.0 / len(net.class_names)
        return weights


_MODES = {mode.name: mode for mode in (Supervised(), UEO(), InfoMax())}

#: The values of ``fit_mode``.
FIT_MODES = tuple(_MODES)


def trains_visual_norm(net) -> bool:
    """Whether ``net`` trains the image encoder's normalisation layers: its
    ``train_visual_norm``, where ``"auto"`` means in the UEO modes."""
    if net.train_visual_norm == "auto":
        return net.fit_mode != "supervised"
    return bool(net.train_visual_norm)


def get_fit_mode(name: str) -> Supervised:
    """The fit mode called ``name`` (one of :data:`FIT_MODES`; validated with the parameters)."""
    return _MODES[name]


__all__ = ["FIT_MODES", "InfoMax", "Supervised", "UEO", "UEO_LOGIT_SCALE", "get_fit_mode", "trains_visual_norm"]
