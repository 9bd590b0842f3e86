"""What the labels bought: calibrated confidence, an accuracy estimate with an honest interval
without a test set, a stopping signal and suspect labels.

The core (classifier, strategies) knows nothing of this package; it reads what any modAL loop
has. :class:`LoopMonitor` ties the parts together for a loop (the runner and the labeling app
use it); each part also stands alone:

* :mod:`~modal_vlm.evaluation.calibration`: :class:`TemperatureScaling`,
  :func:`expected_calibration_error`, :func:`~modal_vlm.evaluation.calibration.margin_scale`;
* :mod:`~modal_vlm.evaluation.estimate`: :func:`prediction_powered_accuracy`,
  :func:`audit_accuracy`, :class:`AccuracyEstimate`;
* :mod:`~modal_vlm.evaluation.stopping`: :func:`prediction_agreement` (Cohen's kappa),
  :func:`is_stable`;
* :mod:`~modal_vlm.evaluation.suspects`: :func:`suspect_order`, :func:`suspicion`,
  :func:`flip_labels` (a careless oracle for experiments).

Every default is measured in ``benchmarks/results/trust.md`` (the documentation's "How good is
my model?" page).

>>> from modal_vlm.evaluation import TemperatureScaling, expected_calibration_error
>>> import numpy as np
>>> proba = np.array([[0.99, 0.01], [0.98, 0.02], [0.97, 0.03], [0.6, 0.4]] * 5)
>>> y = np.array([0, 1, 0, 1] * 5)     # right half the time, yet 89 % sure on average
>>> scaler = TemperatureScaling().fit(proba, y)
>>> expected_calibration_error(y, scaler.transform(proba)) < expected_calibration_error(y, proba)
True
"""
from .assessment import Assessment, HeldOutPairs, assess, fit_calibrator, shown_probabilities
from .calibration import TemperatureScaling, expected_calibration_error
from .estimate import AccuracyEstimate, audit_accuracy, prediction_powered_accuracy
from .monitor import DEFAULT_AUDIT_FRACTION, LoopMonitor, audit_count
from .stopping import is_stable, prediction_agreement
from .suspects import flip_labels, suspect_order, suspicion

__all__ = ["AccuracyEstimate", "Assessment", "DEFAULT_AUDIT_FRACTION", "HeldOutPairs", "LoopMonitor",
           "TemperatureScaling", "fit_calibrator",
           "assess", "audit_accuracy", "audit_count", "expected_calibration_error", "flip_labels", "is_stable",
           "prediction_agreement", "prediction_powered_accuracy", "shown_probabilities", "suspect_order", "suspicion"]
