"""CEC's parameters out of range are refused, naming the parameter and value, before any work
(issue 25: `cec_query(k<=0)` / `top_n<=0` were accepted silently)."""
import pytest

from modal_vlm.strategies import cec_query


@pytest.mark.trial("also: cec k/top_n")
@pytest.mark.parametrize("params, match", [({"k": 0}, "k must be an integer >= 1, got 0"),
                                           ({"k": -3}, "k must be an integer >= 1, got -3"),
                                           ({"top_n": 0}, "top_n must be an integer >= 1, got 0"),
                                           ({"top_n": -1}, "top_n must be an integer >= 1, got -1"),
                                           ({"k": 2.5}, "k must be an int")])
def test_cec_refuses_non_positive_k_and_top_n(fake, params, match):
    clf, X = fake
    with pytest.raises(ValueError, match=match):
        cec_query(clf, X, 3, **params)
    assert clf.calls == {"transform": 0, "predict_proba": 0}  # refused before any work
