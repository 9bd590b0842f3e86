"""Odd inputs of the first-hour and bad-day trials (issue 25): each accepted correctly or
refused with an error that names the input, and changes nothing."""
import numpy as np
import pytest
import torch


@pytest.mark.trial("first-hour 7: empty X")
@pytest.mark.parametrize("X", [np.array([]), np.empty((0, 5)), np.empty((0, 8, 8, 3), np.uint8), []],
                         ids=["1-d", "2-d", "4-d", "list"])
def test_empty_X_says_it_is_empty(make_clf, X):
    with pytest.raises(ValueError, match="X is empty"):
        make_clf().predict_proba(X)


@pytest.mark.trial("bad-day 8")
@pytest.mark.parametrize("X, where", [(np.ones((2, 16, 16), dtype=bool), "X is a boolean array"),
                                      (np.zeros((2, 16, 16, 3), dtype=bool), "X is a boolean array"),
                                      ([np.zeros((16, 16), np.uint8), np.ones((16, 16), bool)],
                                       r"X\[1\] is a boolean array")],
                         ids=["grey-masks", "rgb-masks", "one-mask-in-a-list"])
def test_boolean_arrays_are_refused(make_clf, X, where):
    clf = make_clf()
    with pytest.raises(ValueError, match=where + ".*a mask, not an image"):
        clf.transform(X)
    with pytest.raises(ValueError, match="a mask, not an image"):
        clf.fit(X, [0, 1])
    assert not clf.initialized_


@pytest.mark.trial("also: tensor size")
def test_preprocessed_tensor_of_the_wrong_size_names_the_expected_size(make_clf):
    clf = make_clf()   # tiny-vit takes 32 x 32
    with pytest.raises(ValueError, match=r"X\[0\]: a preprocessed tensor of shape \(3, 4, 4\), but this "
                                         r"backbone takes \(3, 32, 32\)"):
        clf.predict_proba(torch.zeros(2, 3, 4, 4))
    assert clf.predict_proba(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
