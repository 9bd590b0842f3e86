"""skorch callbacks and schedules of the CoOp training recipe."""
from __future__ import annotations

import math

from skorch.callbacks import Callback
from tqdm.auto import tqdm


class WarmupCosine:
    """Learning-rate factor per epoch: constant warm-up, then cosine annealing (CoOp).

    The first ``warmup_epochs`` epochs run at ``warmup_lr``; then the rate follows
    ``lr * 0.5 * (1 + cos(pi * t / max_epochs))`` with ``t`` counted from the end of the
    warm-up, as in CoOp's ``ConstantWarmupScheduler`` around ``CosineAnnealingLR``.
    Used as ``lr_lambda`` of ``torch.optim.lr_scheduler.LambdaLR``.

    Examples
    --------
    >>> f = WarmupCosine(lr=0.002, max_epochs=4, warmup_epochs=1, warmup_lr=1e-5)
    >>> [round(f(e) * 0.002, 6) for e in range(4)]
    [1e-05, 0.002, 0.001707, 0.001]
    """

    def __init__(self, lr, max_epochs, warmup_epochs=1, warmup_lr=1e-5):
        self.lr, self.max_epochs = lr, max_epochs
        self.warmup_epochs, self.warmup_lr = warmup_epochs, warmup_lr

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return self.warmup_lr / self.lr
        t = epoch - self.warmup_epochs
        return 0.5 * (1.0 + math.cos(math.pi * t / self.max_epochs))


class EpochProgressBar(Callback):
    """One progress bar per ``fit`` over epochs, shown when training takes over 2 s
    (``verbose=1``); skorch's per-epoch table is printed instead with ``verbose>=2``."""

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.bar_ = tqdm(total=net.max_epochs, desc="training prompt", unit="epoch", delay=2.0,
                         leave=False, disable=(net.verbose != 1) or None)

    def on_epoch_end(self, net, **kwargs):
        self.bar_.update(1)
        self.bar_.set_postfix(loss=f"{net.history[-1, 'train_loss']:.4f}", refresh=False)

    def on_train_end(self, net, X=None, y=None, **kwargs):
        self.bar_.close()
        del self.bar_
