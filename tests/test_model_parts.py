"""The estimator's parts, each without a backbone: label encoding, the fit modes, the declared
parameters; and set_params' eager rebuild."""
import numpy as np
import pytest
import torch

from modal_vlm import NONE, ClipPromptClassifier
from modal_vlm.exceptions import InvalidParameterError
from modal_vlm.model._labels import check_targets, encode_labels, names_given
from modal_vlm.model._params import PARAMETER_CONSTRAINTS, validate
from modal_vlm.model.fit_modes import FIT_MODES, get_fit_mode
from modal_vlm.model.losses import ueo_loss


def test_labels_encode_names_indices_and_sentinels():
    names = ["cat", "dog"]
    assert encode_labels(["dog", NONE, "cat", -1], names).tolist() == [1, NONE, 0, -1]
    assert encode_labels(np.array(["dog", "-2"]), names).tolist() == [1, NONE]  # as modAL stacks them
    assert encode_labels([1.0, 0.0], names).dtype == np.int64
    assert names_given(["dog", -1], names) and not names_given([1, 0], names) and not names_given(None, names)
    with pytest.raises(InvalidParameterError, match="mixes class names with numbers"):
        encode_labels(["cat", 1], names)
    with pytest.raises(ValueError, match=r"Unknown labels \['cow'\]"):
        encode_labels(["cow"], names)
    with pytest.raises(ValueError, match=r"Unknown labels \[2\]"):
        check_targets(2, [0, 2], names)
    with pytest.raises(ValueError, match="different lengths: 3 images, 2 labels"):
        check_targets(3, [0, 1], names)


def test_fit_modes_check_labels_and_losses():
    assert FIT_MODES == ("supervised", "ueo", "infomax")
    supervised, ueo = get_fit_mode("supervised"), get_fit_mode("ueo")
    with pytest.raises(ValueError, match="y == -1 marks unlabeled samples"):
        supervised.check_labels(np.array([0, -1]))
    ueo.check_labels(np.array([0, -1]))
    assert supervised.learns_nothing(torch.tensor([NONE, NONE])) and not ueo.learns_nothing(torch.tensor([NONE]))

    class Net:  # what data_loss reads of the estimator
        criterion_ = torch.nn.CrossEntropyLoss()
        lambda_ueo = 1.0

        class module_:
            logit_scale = 100.0

    y_pred = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.01, 0.0], [0.0, 0.03]])
    y_true = torch.tensor([0, 1, -1, NONE])
    X = {"weight": torch.tensor([1.0, 1.0, 0.9, 0.5])}
    labeled = Net.criterion_(y_pred[:2], y_true[:2])
    torch.testing.assert_close(supervised.data_loss(Net, y_pred, y_true, X, None), labeled)
    # plus the unlabeled term on the unlabeled and "none" samples, with their weights
    torch.testing.assert_close(ueo.data_loss(Net, y_pred, y_true, X, None),
                               labeled + ueo_loss(y_pred[2:], X["weight"][2:]))
    full = supervised.data_loss(Net, y_pred[:2], y_true[:2], X, lambda p, t: torch.tensor(7.0))
    assert float(full) == 7.0  # every sample labeled: skorch's loss


@pytest.mark.parametrize("name, value, message", [
    ("lr", -1, "lr must be a number >= 0, got -1."),
    ("batch_size", 0, "batch_size must be an integer >= 1, or -1, got 0."),
    ("fit_mode", "bogus", "fit_mode must be one of 'infomax', 'supervised', 'ueo', got 'bogus'."),
    ("train_visual_norm", "yes", "train_visual_norm must be 'auto', or a bool, got 'yes'."),
])
def test_parameters_are_declared_and_validated_in_one_format(name, value, message):
    assert name in PARAMETER_CONSTRAINTS
    clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", **{name: value})
    with pytest.raises(InvalidParameterError) as caught:
        clf.check_params()  # loads nothing
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, TypeError)
    validate(ClipPromptClassifier(["cat", "dog"]))  # the defaults are valid


def test_set_params_rebuilds_the_module_at_once():
    clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0)
    X = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    before = clf.predict_proba(X)
    clf.set_params(template="a sketch of a {}.")
    assert clf.module_params_["template"] == "a sketch of a {}."  # rebuilt in set_params, not on the next call
    clf.set_params(class_names=["cat", "dog", "car"])
    assert clf.module_.text_features().shape[0] == 3 and clf.predict_proba(X).shape == (2, 3)
    assert before.shape == (2, 2)
