"""skorch callbacks and schedules of the CoOp training recipe: the epochs of ``max_epochs="auto"``,
the warm-up and cosine learning rate, early stopping on a flat loss, the progress bar, and the
estimators' default callbacks (:func:`default_callbacks`)."""
from __future__ import annotations

import math

import numpy as np
from skorch.callbacks import (Callback, EarlyStopping, EpochScoring, EpochTimer, LRScheduler,
                              PassthroughScoring, PrintLog)
from tqdm.auto import tqdm


#: ``max_epochs="auto"``: epochs by labels per class (see :func:`shot_schedule_epochs`).
AUTO_EPOCHS = "auto"

#: The supervised fit's epochs at <= 1, <= 4 and more labels per class (issue 27,
#: ``benchmarks/results/learners_one_shot.md`` and ``learners.md``).
SHOT_SCHEDULE = (3, 50, 80)
#: The CoOp authors' few-shot schedule, kept by the UEO modes (UEO's own 50 epochs without labels).
COOP_SHOT_SCHEDULE = (50, 100, 200)


def shot_schedule_epochs(n_labeled: int, n_classes: int, schedule: tuple = SHOT_SCHEDULE) -> int:
    """Epochs of ``max_epochs="auto"``: a schedule by labels per class.

    CoOp's few-shot configurations train 50 epochs at 1 shot, 100 at 2 and 4 shots and 200
    at 8 and 16 (``COOP_SHOT_SCHEDULE``). With this estimator's zero-shot start, KgCoOp and
    lr 0.01, ``SHOT_SCHEDULE`` trains 3 / 50 / 80 epochs. Above one label per class, 50 and
    80 keep the test accuracy of CoOp's schedule (lr 0.005, early stopping) within one std at
    20 to 80 labels on 10 classes (``benchmarks/results/learners.md``). At one label per
    class or fewer, longer training moves the prompt away from zero-shot on too little
    evidence: 3 epochs (a warm-up epoch and two steps) gave 0.456 at 10 labels and 0.421 at 5
    (zero-shot 0.400), where 50 epochs gave 0.423 and 0.381, and 25 epochs at lr 0.01 0.414
    and 0.373 (``learners_one_shot.md``, 20 seeds; the loop's first round:
    ``learners_one_shot_loop.md``). A fit on ViT-B-32 with 80 labels is then at most about
    11 full-length text steps at 10 classes and 0.4 at 100 (``fit_steps_3_50_80.md``). With
    ``k = n_labeled / n_classes`` labels per class: ``schedule[0]`` epochs for ``k <= 1``,
    ``schedule[1]`` for ``k <= 4``, ``schedule[2]`` above.

    Parameters
    ----------
    n_labeled : int
        Labeled training samples.
    n_classes : int
        Number of classes.
    schedule : tuple of 3 int, default=SHOT_SCHEDULE
        Epochs at <= 1, <= 4 and more labels per class.

    Returns
    -------
    int
        One of ``schedule``.

    Examples
    --------
    >>> [shot_schedule_epochs(n, 10) for n in (10, 20, 40, 50, 80)]
    [3, 50, 50, 80, 80]
    >>> [shot_schedule_epochs(n, 10, COOP_SHOT_SCHEDULE) for n in (0, 10, 20, 80)]
    [50, 50, 100, 200]
    """
    shots = n_labeled / n_classes
    return schedule[0] if shots <= 1 else schedule[1] if shots <= 4 else schedule[2]


class WarmupCosine:
    """Learning rate per epoch: constant warm-up, then cosine annealing (CoOp).

    The first ``warmup_epochs`` epochs run at ``warmup_lr``; then the rate follows
    ``lr * 0.5 * (1 + cos(pi * t / max_epochs))`` with ``t`` counted from the end of the
    warm-up, as in CoOp's ``ConstantWarmupScheduler`` around ``CosineAnnealingLR``. Rates
    are absolute, so ``lr=0`` is valid (no training after the warm-up).

    Parameters
    ----------
    lr : float
        Rate at the start of the cosine.
    max_epochs : int
        Length of the cosine period, ``T`` in ``cos(pi * t / T)``.
    warmup_epochs : int, default=1
        Epochs at ``warmup_lr`` first.
    warmup_lr : float, default=1e-5
        Rate during the warm-up.

    Examples
    --------
    >>> f = WarmupCosine(lr=0.002, max_epochs=4, warmup_epochs=1, warmup_lr=1e-5)
    >>> [round(f(e), 6) for e in range(4)]
    [1e-05, 0.002, 0.001707, 0.001]
    """

    def __init__(self, lr, max_epochs, warmup_epochs=1, warmup_lr=1e-5):
        self.lr, self.max_epochs = lr, max_epochs
        self.warmup_epochs, self.warmup_lr = warmup_epochs, warmup_lr

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return self.warmup_lr
        t = epoch - self.warmup_epochs
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * t / self.max_epochs))


class WarmupCosineLR(Callback):
    """:class:`WarmupCosine` as the learning-rate schedule of a skorch net, restarted by every
    training run.

    Each ``fit`` and each ``partial_fit`` (or ``warm_start`` fit) runs the whole schedule,
    warm-up included, from the net's current ``lr``, ``warmup_epochs`` and ``warmup_lr`` over
    the epochs of that run (``net.fit_epochs_``: ``max_epochs``, or what ``"auto"`` resolved
    to): continuing training is a warm restart, never the cosine continued past
    its end. At the start of every epoch each parameter group gets the scheduled rate times
    its own ratio to ``lr`` (1 unless set through ``optimizer__param_groups``); the rate is
    recorded in the history as ``"lr"``.

    Examples
    --------
    >>> from modal_vlm import ClipPromptClassifier
    >>> import numpy as np
    >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", max_epochs=3,
    ...                            lr=0.01, verbose=0, random_state=0)
    >>> X = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    >>> [round(lr, 5) for lr in clf.fit(X, [0, 1]).history[:, "lr"]]
    [1e-05, 0.01, 0.0075]
    >>> [round(lr, 5) for lr in clf.partial_fit(X, [0, 1]).history[-3:, "lr"]]
    [1e-05, 0.01, 0.0075]
    """

    #: Key of a parameter group that holds its ratio to the net's ``lr``.
    SCALE_KEY = "lr_scale"

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.schedule_ = WarmupCosine(net.lr, net.fit_epochs_, net.warmup_epochs, net.warmup_lr)
        self.epoch_ = 0
        for group in net.optimizer_.param_groups:
            # Read once from a new optimizer, whose groups still hold their initial rates.
            group.setdefault(self.SCALE_KEY, group["lr"] / net.lr if net.lr else 1.0)

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        rate = self.schedule_(self.epoch_)
        for group in net.optimizer_.param_groups:
            group["lr"] = rate * group[self.SCALE_KEY]
        net.history.record("lr", rate)

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self.epoch_ += 1


def _verbose_sink(text, verbose=0):
    if verbose >= 2:
        print(text)


class TrainLossPlateau(EarlyStopping):
    """Stop training when the training loss has stopped falling: skorch's ``EarlyStopping`` on
    ``train_loss``, set from the net's ``n_iter_no_change`` and ``tol`` at every training run.

    Training ends after ``n_iter_no_change`` epochs in a row without a relative fall of
    ``tol`` below the best loss so far (``n_iter_no_change=None``: never). scikit-learn's
    ``MLPClassifier`` stops on its training loss the same way (``tol``,
    ``n_iter_no_change``). With the CoOp schedule at 8 labels per class the prompt learner's
    loss is flat after about half of its 200 epochs, and the steps after it did not change
    the test accuracy beyond one std (``benchmarks/results/learners.md``).

    Examples
    --------
    >>> from modal_vlm import ClipPromptClassifier
    >>> import numpy as np
    >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", max_epochs=50, lr=0.0,
    ...                            warmup_lr=0.0, n_iter_no_change=3, verbose=0)
    >>> X = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    >>> len(clf.fit(X, [0, 1]).history_)   # nothing trains: the loss is flat from the start
    4
    """

    def __init__(self):
        super().__init__(monitor="train_loss", threshold_mode="rel", lower_is_better=True, sink=_verbose_sink)

    def on_train_begin(self, net, **kwargs):
        self.patience, self.threshold = net.n_iter_no_change, net.tol
        return super().on_train_begin(net, **kwargs)

    def on_epoch_end(self, net, **kwargs):
        if self.patience is not None:
            super().on_epoch_end(net, **kwargs)


class VerbosePrintLog(PrintLog):
    """skorch's per-epoch table, made only when it is printed (``verbose >= 2``): formatting
    it took about a millisecond per epoch, a fifth of a linear head's whole step.

    Parameters
    ----------
    keys_ignored : str or list of str, optional
        As for skorch's ``PrintLog``.
    sink : callable, default=print
        As for skorch's ``PrintLog``.
    tablefmt : str, default="simple"
        As for skorch's ``PrintLog``.
    floatfmt : str, default=".4f"
        As for skorch's ``PrintLog``.
    stralign : str, default="right"
        As for skorch's ``PrintLog``.
    """

    def on_epoch_end(self, net, **kwargs):
        if net.verbose >= 2:
            super().on_epoch_end(net, **kwargs)


class EpochProgressBar(Callback):
    """One progress bar per ``fit`` over epochs, shown when training takes over 2 s
    (``verbose=1``); skorch's per-epoch table is printed instead with ``verbose>=2``. The
    bar is named by the net's ``PROGRESS_LABEL``; it closes early when training stops early."""

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.bar_ = tqdm(total=net.fit_epochs_, desc=getattr(net, "PROGRESS_LABEL", "training"), unit="epoch",
                         delay=2.0, leave=False, disable=(net.verbose != 1) or None)

    def on_epoch_end(self, net, **kwargs):
        self.bar_.update(1)
        self.bar_.set_postfix(loss=f"{net.history[-1, 'train_loss']:.4f}", refresh=False)

    def on_train_end(self, net, X=None, y=None, **kwargs):
        self.bar_.close()
        del self.bar_


def user_callbacks(net) -> list:
    """The callbacks (instances or classes) given in ``net.callbacks``, without their names."""
    user = net.callbacks if isinstance(net.callbacks, (list, tuple)) else []
    return [item[1] if isinstance(item, (tuple, list)) else item for item in user]


def labeled_accuracy(net, X, y):
    """Accuracy over the samples labeled with a class (``y >= 0``): the default ``valid_acc``."""
    y = np.asarray(y)
    labeled = y >= 0
    return float(np.mean(net._predict_indices(X)[labeled] == y[labeled])) if labeled.any() else float("nan")


def default_callbacks(net) -> list:
    """The estimators' built-in callbacks, ``(name, callback)``: timer, losses, ``valid_acc``,
    CoOp's schedule (unless ``net.callbacks`` holds an ``LRScheduler``, which replaces it
    rather than stacking on it), early stopping, progress bar and the per-epoch table."""
    callbacks = [
        ("epoch_timer", EpochTimer()),
        ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
        # with a train_split (ValidSplit...); skipped without one
        ("valid_loss", PassthroughScoring(name="valid_loss")),
        ("valid_acc", EpochScoring(labeled_accuracy, name="valid_acc", lower_is_better=False)),
        ("lr_scheduler", WarmupCosineLR()),
        ("early_stopping", TrainLossPlateau()),
        ("progress_bar", EpochProgressBar()),
        ("print_log", VerbosePrintLog(sink=net._print_log)),
    ]
    if any(isinstance(cb, LRScheduler) or (isinstance(cb, type) and issubclass(cb, LRScheduler))
           for cb in user_callbacks(net)):
        callbacks = [item for item in callbacks if item[0] != "lr_scheduler"]
    return callbacks


def stopped_early(callbacks) -> bool:
    """Whether a skorch ``EarlyStopping`` among ``callbacks`` (a net's ``callbacks_``) just
    ended training (it raises ``KeyboardInterrupt``, as Ctrl-C does: the fit is then
    finished, not interrupted)."""
    return any(isinstance(cb, EarlyStopping) and cb.patience is not None
               and getattr(cb, "misses_", 0) >= cb.patience for _, cb in callbacks)


__all__ = ["AUTO_EPOCHS", "EpochProgressBar", "TrainLossPlateau", "VerbosePrintLog", "WarmupCosine", "WarmupCosineLR",
           "shot_schedule_epochs"]
