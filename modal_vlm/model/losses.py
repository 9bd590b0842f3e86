r"""Unsupervised entropy losses on unlabeled batches: UEO and its equal-weights case, InfoMax.

UEO (Universal Entropy Optimization; Liang et al., ICML 2024) tunes CLIP on unlabeled data
that may contain out-of-distribution (OOD) samples. Every sample carries a fixed weight
``w_i``, its zero-shot confidence (:func:`ueo_sample_weights`). On a batch of training
probabilities ``p_i`` the loss is

.. math::

    L = \sum_i \tilde w_i H(p_i) - H\Big(\sum_i \phi_i p_i\Big), \qquad
    \tilde w_i = \frac{w_i}{\sum_j w_j}, \qquad
    \phi_i = \frac{1 / w_i}{\sum_j 1 / w_j},

with ``H(p) = -sum_c p_c log(p_c + 1e-5)``. The first term sharpens confident (likely
in-distribution) samples; the second spreads the mass of uncertain (likely OOD) samples
over the classes. With equal weights it is InfoMax: ``mean H(p_i) - H(mean p_i)``.
"""
from __future__ import annotations

import torch

#: Added inside the logarithm of :func:`entropy`, as in the authors' code; it keeps the
#: gradient finite where a probability underflows to 0.
ENTROPY_EPS = 1e-5


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) along the last axis, ``-sum p log(p + 1e-5)``.

    Parameters
    ----------
    probs : torch.Tensor of shape (..., n_classes)
        Probability vectors.

    Returns
    -------
    torch.Tensor of shape (...)
        Entropy of each vector.

    Examples
    --------
    >>> import torch
    >>> entropy(torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
    tensor([0.6931, 0.5623])
    """
    return -(probs * torch.log(probs + ENTROPY_EPS)).sum(dim=-1)


def ueo_loss(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """UEO loss of one batch of unlabeled samples.

    Parameters
    ----------
    logits : torch.Tensor of shape (n_samples, n_classes)
        Training logits; for CLIP ``100 * cos(image, text)``. The training probabilities
        are ``softmax(logits)``.
    weights : torch.Tensor of shape (n_samples,)
        Positive sample weights ``w_i`` (see :func:`ueo_sample_weights`). They are
        constants: no gradient flows into them.

    Returns
    -------
    torch.Tensor
        Scalar loss ``sum_i w~_i H(p_i) - H(sum_i phi_i p_i)``, to be minimised.

    Raises
    ------
    ValueError
        If the shapes do not match or a weight is not a positive finite number.

    Examples
    --------
    >>> import torch
    >>> logits = torch.tensor([[4.0, 0.0], [0.0, 0.1]], requires_grad=True)
    >>> loss = ueo_loss(logits, weights=torch.tensor([0.9, 0.5]))
    >>> loss.backward()
    """
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(
            f"logits must have shape (n_samples, n_classes) with n_samples >= 1, "
            f"got {tuple(logits.shape)}"
        )
    # The weights are fixed before training (spec); detaching guards against a caller
    # that computed them with gradient tracking on.
    weights = torch.as_tensor(weights).detach().to(dtype=logits.dtype, device=logits.device)
    if weights.shape != logits.shape[:1]:
        raise ValueError(
            f"weights must have shape ({logits.shape[0]},) to match logits, "
            f"got {tuple(weights.shape)}"
        )
    if not bool(torch.all(torch.isfinite(weights) & (weights > 0))):
        raise ValueError("weights must be positive and finite (the loss uses 1 / w)")
    probs = torch.softmax(logits, dim=1)
    confidence_weights = weights / weights.sum()
    uncertainty_weights = (1.0 / weights) / (1.0 / weights).sum()
    marginal = uncertainty_weights @ probs
    return (confidence_weights * entropy(probs)).sum() - entropy(marginal)


def infomax_loss(logits: torch.Tensor) -> torch.Tensor:
    """InfoMax loss ``mean_i H(p_i) - H(mean_i p_i)``: :func:`ueo_loss` with equal weights.

    Parameters
    ----------
    logits : torch.Tensor of shape (n_samples, n_classes)
        Training logits; the probabilities are ``softmax(logits)``.

    Returns
    -------
    torch.Tensor
        Scalar loss, to be minimised.

    Examples
    --------
    >>> import torch
    >>> infomax_loss(torch.zeros(3, 4)).abs() < 1e-6    # uniform predictions: 0
    tensor(True)
    """
    return ueo_loss(logits, torch.ones(logits.shape[:1], dtype=logits.dtype, device=logits.device))


def ueo_sample_weights(cosine: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """UEO sample weights: the zero-shot maximum softmax probability ``max_c softmax(cos / T)``.

    Parameters
    ----------
    cosine : torch.Tensor or array-like of shape (n_samples, n_classes)
        Cosine similarities between the zero-shot model's image features and the text
        features of the prompts ``"a photo of a {class}."``.
    temperature : float, default=1.0
        ``T``. The authors use 1.0 on raw cosines, which gives weights close to
        ``1 / n_classes`` that differ only mildly; 0.01 is CLIP's usual logit scale 100.

    Returns
    -------
    torch.Tensor of shape (n_samples,)
        Weights in ``(1 / n_classes, 1]``, without gradient.

    Raises
    ------
    ValueError
        If ``cosine`` is not 2-D or ``temperature`` is not positive.

    Examples
    --------
    >>> import torch
    >>> ueo_sample_weights(torch.tensor([[0.3, 0.2], [0.25, 0.25]]), temperature=0.1)
    tensor([0.7311, 0.5000])
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    cosine = torch.as_tensor(cosine)
    if cosine.ndim != 2:
        raise ValueError(
            f"cosine must have shape (n_samples, n_classes), got {tuple(cosine.shape)}"
        )
    with torch.no_grad():
        return torch.softmax(cosine / temperature, dim=1).max(dim=1).values
