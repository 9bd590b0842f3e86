import math

import numpy as np
import pytest
import torch

from modal_vlm.model.losses import entropy, infomax_loss, ueo_loss, ueo_sample_weights


def H(p):
    """Entropy with the authors' epsilon, written out independently of the module."""
    return -sum(pc * math.log(pc + 1e-5) for pc in p)


def numpy_ueo(logits, w):
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    w_tilde = w / w.sum()
    phi = (1 / w) / (1 / w).sum()
    return sum(wt * H(pi) for wt, pi in zip(w_tilde, p)) - H(phi @ p)


def test_entropy_by_hand():
    assert entropy(torch.tensor([0.25, 0.75])).item() == pytest.approx(
        -(0.25 * math.log(0.25 + 1e-5) + 0.75 * math.log(0.75 + 1e-5)), rel=1e-6
    )


def test_ueo_loss_by_hand():
    # p_1 = (1/2, 1/2), p_2 = softmax(ln 3, 0) = (3/4, 1/4); w = (1/2, 1/4)
    # w~ = (2/3, 1/3); 1/w = (2, 4) so phi = (1/3, 2/3);
    # marginal = 1/3 (1/2, 1/2) + 2/3 (3/4, 1/4) = (2/3, 1/3).
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]], dtype=torch.float64)
    expected = 2 / 3 * H([0.5, 0.5]) + 1 / 3 * H([0.75, 0.25]) - H([2 / 3, 1 / 3])
    loss = ueo_loss(logits, torch.tensor([0.5, 0.25]))
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_ueo_loss_matches_numpy_on_random_batch():
    rng = np.random.default_rng(0)
    logits = 100 * rng.uniform(-0.3, 0.3, size=(16, 5))
    w = rng.uniform(0.2, 1.0, size=16)
    loss = ueo_loss(torch.from_numpy(logits), torch.from_numpy(w))
    assert loss.item() == pytest.approx(numpy_ueo(logits, w), rel=1e-10)


def test_uniform_predictions_give_zero_loss_whatever_the_weights():
    assert ueo_loss(torch.zeros(3, 4), torch.tensor([0.9, 0.3, 0.5])).item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_equal_weights_reduce_to_infomax():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(8, 3)) * 3
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    infomax_by_hand = np.mean([H(pi) for pi in p]) - H(p.mean(axis=0))
    logits_t = torch.from_numpy(logits)
    assert infomax_loss(logits_t).item() == pytest.approx(infomax_by_hand, rel=1e-10)
    # Only relative weights matter: any constant weight is InfoMax.
    assert ueo_loss(logits_t, torch.full((8,), 0.37, dtype=torch.float64)).item() == (
        pytest.approx(infomax_by_hand, rel=1e-10)
    )


def test_gradient_step_sharpens_confident_sample_and_flattens_weighted_marginal():
    # Sample 0 is confident (high weight); samples 1 and 2 are uncertain OOD-like samples
    # that lean to class 0 too, so the phi-weighted marginal starts peaked on class 0.
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.6, 0.0, 0.2], [0.5, 0.3, 0.0]], requires_grad=True)
    weights = torch.tensor([0.9, 0.4, 0.35])
    phi = (1 / weights) / (1 / weights).sum()

    def confident_and_marginal_entropy(z):
        p = torch.softmax(z, dim=1)
        return entropy(p[0]).item(), entropy(phi @ p).item()

    before = confident_and_marginal_entropy(logits.detach())
    ueo_loss(logits, weights).backward()
    after = confident_and_marginal_entropy(logits.detach() - 0.5 * logits.grad)
    assert after[0] < before[0]
    assert after[1] > before[1]


def test_weights_get_no_gradient():
    logits = torch.randn(4, 3, requires_grad=True)
    weights = torch.tensor([0.5, 0.6, 0.7, 0.8], requires_grad=True)
    ueo_loss(logits, weights).backward()
    assert logits.grad is not None
    assert weights.grad is None


@pytest.mark.parametrize(
    "logits, weights, match",
    [
        (torch.zeros(3), torch.ones(3), "shape"),
        (torch.zeros(0, 3), torch.ones(0), "shape"),
        (torch.zeros(3, 2), torch.ones(2), "weights must have shape"),
        (torch.zeros(3, 2), torch.tensor([0.5, 0.0, 0.5]), "positive"),
        (torch.zeros(3, 2), torch.tensor([0.5, float("nan"), 0.5]), "positive"),
    ],
)
def test_ueo_loss_rejects_bad_input(logits, weights, match):
    with pytest.raises(ValueError, match=match):
        ueo_loss(logits, weights)


def test_sample_weights_are_max_softmax_of_scaled_cosines():
    cos = torch.tensor([[0.3, 0.2], [0.25, 0.25]], requires_grad=True)
    # softmax(3, 2)[0] = 1 / (1 + e^-1); a tie gives 1/2.
    weights = ueo_sample_weights(cos, temperature=0.1)
    assert weights.tolist() == pytest.approx([1 / (1 + math.exp(-1)), 0.5], rel=1e-6)
    assert not weights.requires_grad
    # The authors' T = 1 on raw cosines: weights barely above 1 / C.
    assert ueo_sample_weights(cos).tolist() == pytest.approx(
        [1 / (1 + math.exp(-0.1)), 0.5], rel=1e-6
    )


def test_sample_weights_accept_numpy_and_reject_bad_input():
    assert ueo_sample_weights(np.array([[0.0, 0.0, 0.0]])).tolist() == pytest.approx([1 / 3])
    with pytest.raises(ValueError, match="temperature"):
        ueo_sample_weights(torch.zeros(2, 3), temperature=0.0)
    with pytest.raises(ValueError, match="shape"):
        ueo_sample_weights(torch.zeros(3))
