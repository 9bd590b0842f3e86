"""The settings of an experiment: defaults (the PCB/CEC protocol), TOML files, overrides.

A TOML file holds the fields of :class:`RunConfig` at its top level and the
:class:`~modal_vlm.ClipPromptClassifier` parameters in a ``[classifier]`` table::

    data = "cifar10/train"          # relative paths are relative to this file
    test_data = "cifar10/test"
    strategies = ["cec", "entropy", "random"]
    seeds = [0, 1, 2]

    [classifier]
    model_name = "linear-conse-efficientnet-lite0-minilm"
    max_epochs = 100
"""
from __future__ import annotations

import dataclasses
import numbers
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..backbones import list_backbones
from ..model.estimators import get_estimator, list_estimators
from ..evaluation.monitor import DEFAULT_AUDIT_FRACTION, check_fraction
from .._validation import check_int
from ..experiment import FIRST_ROUNDS
from ..strategies import get_strategy
from .pools import check_imbalance

#: Settings that name folders (relative to a TOML file's folder there).
PATH_SETTINGS = ("data", "test_data", "none_data")

#: Values of ``on_bad_image``.
BAD_IMAGE_POLICIES = ("fail", "skip")

#: Classifier parameters that change how a run executes, not its results: a run may resume
#: with other values.
RUNTIME_PARAMS = frozenset({"cache_dir", "device", "verbose", "encode_batch_size", "encode_workers"})

#: Classifier parameters the runner sets itself.
RESERVED_PARAMS = frozenset({"class_names", "random_state"})


@dataclass(frozen=True)
class RunConfig:
    """What an experiment runs: data, strategies, seeds, the protocol and the classifier.

    The defaults are the PCB/CEC protocol: 8 rounds, a budget of one label per class per
    round, a random first round, 3 seeds, ``ClipPromptClassifier``'s CoOp defaults.

    Parameters
    ----------
    data : str, optional
        Image folder (one sub-folder per class) of the pool; None when the data are given
        in memory (:class:`~modal_vlm.runner.RunData`).
    test_data : str, optional
        Image folder of the test set (same class folders); default: a stratified split of
        ``data``.
    test_size : float or int, default=0.2
        Without ``test_data``: the test share of ``data`` (a fraction, or a count of images).
    split_seed : int, default=0
        Seed of that split (one split for every strategy and seed).
    max_per_class, max_test_per_class : int, optional
        Read at most this many images per class from ``data`` / ``test_data`` (a seeded subset).
    on_bad_image : {"fail", "skip"}, default="fail"
        An unreadable image file stops the run (naming it), or is left out with a warning.
    none_data : str, optional
        Image folder (searched recursively) of images of none of the classes: they join the
        pool and the test set (split like a class, by ``test_size`` and ``split_seed``), the
        simulated oracle answers "none of these classes" (:data:`modal_vlm.NONE`) for them,
        each answer costs a label, and the test set's share is scored as
        out-of-distribution (AUROC). See :doc:`/open_set`.
    long_tail : float, optional
        Make the pool long-tailed: class counts decay by a constant factor, from the
        smallest class's pool size for the first class (folder order) down to that size
        divided by ``long_tail`` for the last (e.g. 100: 200 images down to 2); the test set
        stays as it is. Report the balanced accuracy (``mean_per_class_accuracy``).
    strategies : tuple of str, default=("cec",)
        Names for :func:`modal_vlm.get_strategy`.
    seeds : tuple of int, default=(0, 1, 2)
        One run per strategy and seed; a seed (distinct, >= 0) seeds the classifier and
        every round's query (see :func:`modal_vlm.experiment.round_seed`).
    rounds : int, default=8
        Query-and-train rounds after the zero-shot round 0 (the protocol: 8).
    budget : int, optional
        Labels per round; default the number of classes.
    first_round : {"random", "strategy"}, default="random"
        Round 1 queries at random (the protocol), or with the strategy from the zero-shot
        predictions (cold start).
    audit_fraction : float, default=0.2
        Share of every round's labels drawn at random from the pool (*audit* picks, the
        rest chosen by the strategy), in [0, 1): they make the accuracy estimate of
        ``rounds.json`` honest (:class:`~modal_vlm.evaluation.LoopMonitor`; the default is
        measured in ``benchmarks/results/trust.md``).
    label_noise : float, default=0.0
        A careless oracle: this share of the pool's labels, chosen per seed, is flipped to
        another class (:func:`~modal_vlm.evaluation.flip_labels`), to test the suspect-label
        flags; in [0, 1).
    classifier : dict, default={}
        Parameters of the learner (``model_name``, ``max_epochs``, ``cache_dir``...), except
        ``class_names`` and ``random_state``, which the runner sets.
    learner : {"prompt", "linear"}, default="prompt"
        The estimator (:func:`modal_vlm.model.estimators.get_estimator`): CoOp prompt tuning
        (``ClipPromptClassifier``, the protocol's), or the zero-shot-initialised linear head
        (``ClipLinearProbe``: the same accuracy on 10-80 labels, seconds instead of minutes
        of training per run).

    Examples
    --------
    >>> config = RunConfig(data="images", strategies=("cec", "random"))
    >>> config.rounds, config.seeds
    (8, (0, 1, 2))
    >>> config.override(rounds=4, classifier={"max_epochs": 50}).validate().classifier
    {'max_epochs': 50}
    """

    data: str | None = None
    test_data: str | None = None
    test_size: float = 0.2
    split_seed: int = 0
    max_per_class: int | None = None
    max_test_per_class: int | None = None
    on_bad_image: str = "fail"
    none_data: str | None = None
    long_tail: float | None = None
    strategies: tuple = ("cec",)
    seeds: tuple = (0, 1, 2)
    rounds: int = 8
    budget: int | None = None
    first_round: str = "random"
    audit_fraction: float = DEFAULT_AUDIT_FRACTION
    label_noise: float = 0.0
    classifier: dict = field(default_factory=dict)
    learner: str = "prompt"

    @classmethod
    def from_toml(cls, path) -> RunConfig:
        """Read a TOML file (see the module docstring); paths are relative to its folder.

        Parameters
        ----------
        path : str or path-like
            The TOML file: :class:`RunConfig` fields at the top level, classifier parameters
            in a ``[classifier]`` table.

        Returns
        -------
        RunConfig
            The defaults overridden by the file's values (not yet validated: see
            :meth:`validate`).

        Raises
        ------
        FileNotFoundError
            No such file.
        ValueError
            Invalid TOML or an unknown key (the message lists the valid ones).
        """
        path = Path(path)
        try:
            with path.open("rb") as f:
                values = tomllib.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"config file {str(path)!r} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
        for key in PATH_SETTINGS:
            if isinstance(values.get(key), str):
                values[key] = str(path.parent / values[key])
        return cls().override(**values)

    def override(self, **values) -> RunConfig:
        """A copy with ``values`` replaced; ``classifier`` entries are merged, not replaced.

        Parameters
        ----------
        **values
            Field names and their new values. A single string or int for ``strategies`` or
            ``seeds`` becomes a one-element tuple, and any sequence a tuple.

        Returns
        -------
        RunConfig
            The new settings (not yet validated: see :meth:`validate`); ``self`` is frozen
            and unchanged.

        Raises
        ------
        ValueError
            An unknown field (the message lists the valid ones).
        """
        fields = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; valid: {fields}")
        if "classifier" in values:
            values["classifier"] = {**self.classifier, **dict(values["classifier"])}
        for key in ("strategies", "seeds"):
            if key in values:
                values[key] = (values[key],) if isinstance(values[key], (str, int)) else tuple(values[key])
        return dataclasses.replace(self, **values)

    def validate(self) -> RunConfig:
        """Check every setting; returns ``self``.

        Returns
        -------
        RunConfig
            ``self``, so that calls chain: ``RunConfig(...).validate()``.

        Raises
        ------
        ValueError
            The first invalid setting, saying what is valid (strategy and model names
            included).
        """
        check_int("rounds", self.rounds)
        if self.budget is not None:
            check_int("budget", self.budget)
        for name in ("max_per_class", "max_test_per_class"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        check_int("split_seed", self.split_seed, minimum=0)
        size = self.test_size
        if isinstance(size, bool) or not (
                (isinstance(size, numbers.Integral) and size >= 1)
                or (isinstance(size, numbers.Real) and 0 < size < 1)):
            raise ValueError(f"test_size must be a fraction in (0, 1) or a count >= 1, got {size!r}.")
        if self.long_tail is not None:
            check_imbalance(self.long_tail)
        _check_choice("first_round", self.first_round, FIRST_ROUNDS)
        check_fraction("audit_fraction", self.audit_fraction)
        check_fraction("label_noise", self.label_noise)
        _check_choice("on_bad_image", self.on_bad_image, BAD_IMAGE_POLICIES)
        _check_distinct("strategies", self.strategies)
        for name in self.strategies:
            get_strategy(name)
        _check_distinct("seeds", self.seeds)
        for seed in self.seeds:
            check_int("seed", seed, minimum=0)
        reserved = sorted(RESERVED_PARAMS & set(self.classifier))
        if reserved:
            raise ValueError(f"classifier parameter(s) {reserved} are set by the runner "
                             "(class names from the data, random_state from the seeds).")
        model = self.classifier.get("model_name")
        if model is not None and model not in list_backbones():
            raise ValueError(f"unknown model {model!r}; valid: {', '.join(list_backbones())}")
        _check_choice("learner", self.learner, list_estimators())
        try:  # the classifier's own checks, which load nothing (class names come with the data)
            get_estimator(self.learner)(["class 0", "class 1"], **self.classifier).check_params()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cannot build the classifier: {exc}") from None
        return self

    def as_dict(self) -> dict:
        """The settings as JSON-ready values.

        Returns
        -------
        dict
            Field name to value; ``strategies`` and ``seeds`` as lists. ``learner`` only when
            it is not ``"prompt"``: runs saved before the option existed resume as they were.

        Examples
        --------
        >>> RunConfig(seeds=(0,)).as_dict()["seeds"]
        [0]
        """
        values = dataclasses.asdict(self)
        values.update(strategies=list(self.strategies), seeds=list(self.seeds))
        if values["learner"] == "prompt":
            del values["learner"]
        return values


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")


def _check_distinct(name, values):
    if not values:
        raise ValueError(f"{name} must not be empty.")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} repeats a value: {list(values)}.")
