"""The pieces of UEO training (``fit_mode="ueo"`` / ``"infomax"``) besides the loss.

* :class:`TrainingSet`: inputs with UEO's fixed sample weight, and a label (-1 = unlabeled,
  -2 = none of the classes);
* :class:`SemiSupervisedBatchSampler`: one labeled and one unlabeled batch per step;
* :func:`norm_adapted_copy`: an image encoder whose normalisation affine parameters train.

The loss itself is :func:`modal_vlm.model.losses.ueo_loss`.
"""
from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler, Subset

from ..sentinels import NONE, UNLABELED

NORM_LAYERS = (nn.LayerNorm, nn.modules.batchnorm._BatchNorm, nn.GroupNorm)


class TrainingSet(Dataset):
    """Training samples: ``({"x": input, "weight": float}, label)``.

    The target is the plain label, as skorch's scoring callbacks and splits expect it
    (``EpochScoring``, ``ValidSplit``); UEO's weight travels with the input, and
    :meth:`~modal_vlm.ClipPromptClassifier.infer` hands only ``"x"`` to the module.

    Parameters
    ----------
    inputs : torch.Tensor or sequence of ImageItem
        Cached embeddings ``(n, D)``, or image items loaded (and augmented) on access.
    labels : array-like of int
        Class index, or -1 for an unlabeled sample.
    weights : array-like of float
        UEO's zero-shot confidence ``w_i`` (1 where unused).
    transform : callable, optional
        Turns an image item into the encoder's input (e.g. an augmenting preprocess).
    """

    def __init__(self, inputs, labels, weights, transform=None):
        self.inputs, self.transform = inputs, transform
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.weights = torch.as_tensor(weights, dtype=torch.float32)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.inputs[i]
        if self.transform is not None:
            x = x.to_tensor(self.transform)
        return {"x": x, "weight": self.weights[i]}, self.labels[i]


class SemiSupervisedBatchSampler(Sampler):
    """Batches of ``batch_size`` labeled samples, each joined by ``unlabeled_batch_size``
    unlabeled ones.

    Labeled samples have a class (``label >= 0``); the unlabeled stream draws the samples
    whose label is in ``unlabeled_labels``; any other sample is never drawn.

    An epoch is one shuffled pass over the labeled samples; the unlabeled samples are drawn
    from an endless shuffled stream, so every round of active learning sees fresh pool
    samples. Without labels an epoch is one shuffled pass over the unlabeled samples;
    without unlabeled samples the batches are purely labeled.

    Parameters
    ----------
    labels : array-like of int
        Class indices; -1 marks unlabeled samples, -2 samples of none of the classes.
    batch_size, unlabeled_batch_size : int
    seed : int, optional
        Seeds the order. The labeled and unlabeled streams draw from separate generators,
        so the labeled batches do not depend on the unlabeled data.
    unlabeled_labels : tuple of int, default=(-1, -2)
        The labels of the unlabeled stream (UNLABELED, NONE); ``()`` draws labeled
        samples only.

    Examples
    --------
    >>> sampler = SemiSupervisedBatchSampler([0, 1, -1, -1, -1], 2, 1, seed=0)
    >>> [len(batch) for batch in sampler]
    [3]
    """

    def __init__(self, labels, batch_size, unlabeled_batch_size, seed=None, unlabeled_labels=(UNLABELED, NONE)):
        labels = torch.as_tensor(labels)
        self.labeled = torch.nonzero(labels >= 0).flatten()
        self.unlabeled = torch.nonzero(torch.isin(labels, torch.as_tensor(list(unlabeled_labels),
                                                                          dtype=labels.dtype))).flatten()
        self.batch_size, self.unlabeled_batch_size = int(batch_size), int(unlabeled_batch_size)
        self.generators = [None if seed is None else torch.Generator().manual_seed(seed + offset)
                           for offset in (0, 1)]
        self._stream = iter(())

    def _shuffled(self, indices):
        generator = self.generators[indices is self.unlabeled]
        return indices[torch.randperm(len(indices), generator=generator)]

    def _next_unlabeled(self, n):
        taken, seen, deferred = [], set(), []
        while len(taken) < min(n, len(self.unlabeled)):
            try:
                i = next(self._stream)
            except StopIteration:
                self._stream = iter(self._shuffled(self.unlabeled).tolist())
                continue
            if i in seen:  # the next pass reached a sample this batch already has
                deferred.append(i)
            else:
                taken.append(i)
                seen.add(i)
        self._stream = itertools.chain(deferred, self._stream)
        return taken

    def __iter__(self):
        if len(self.labeled) == 0:
            for batch in self._shuffled(self.unlabeled).split(self.unlabeled_batch_size):
                yield batch.tolist()
            return
        for batch in self._shuffled(self.labeled).split(self.batch_size):
            yield batch.tolist() + self._next_unlabeled(self.unlabeled_batch_size)

    def __len__(self):
        if len(self.labeled) == 0:
            return -(-len(self.unlabeled) // self.unlabeled_batch_size)
        return -(-len(self.labeled) // self.batch_size)


def dataset_labels(dataset) -> torch.Tensor:
    """Labels of a :class:`TrainingSet`, or of a ``Subset`` of one (a ``train_split`` part)."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    return dataset.labels


def norm_adapted_copy(visual: nn.Module) -> nn.Module:
    """A copy of ``visual`` whose normalisation layers' affine parameters (LayerNorm,
    BatchNorm, GroupNorm weight and bias) require gradients; everything else stays frozen,
    BatchNorm running statistics included (the copy is used in eval mode).

    Examples
    --------
    >>> encoder = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    >>> [n for n, p in norm_adapted_copy(encoder).named_parameters() if p.requires_grad]
    ['1.weight', '1.bias']
    """
    adapted = copy.deepcopy(visual).eval()
    adapted.requires_grad_(False)
    for module in adapted.modules():
        if isinstance(module, NORM_LAYERS) and getattr(module, "weight", None) is not None:
            module.weight.requires_grad_(True)
            if module.bias is not None:
                module.bias.requires_grad_(True)
    return adapted
