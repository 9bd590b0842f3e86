"""Committees for modAL's query-by-committee strategies, with a real cold start.

Before any label every member of a committee predicts zero-shot, from its ``template``.
Members that differ only in ``random_state`` therefore agree exactly in round 0, and
disagreement strategies (vote entropy, consensus entropy, KL max disagreement) see no
disagreement: they return the pool's first indices. :func:`prompt_committee` gives each
member its own prompt template (CLIP's prompt-ensemble templates by default) and its own
seed, so the members disagree where the zero-shot prediction depends on the wording, which
is where it is fragile. See ``benchmarks/results/committee.md`` for what that buys.
"""
from __future__ import annotations

import numpy as np
from modAL.models import ActiveLearner, Committee
from sklearn.base import clone
from sklearn.utils import check_random_state

#: The seven prompt templates of CLIP's ImageNet prompt ensemble (Radford et al., 2021,
#: the notebook "Prompt Engineering for ImageNet").
CLIP_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


class PromptCommittee(Committee):
    """modAL's ``Committee`` whose votes keep the members' labels as they are.

    modAL collects the members' predictions in a float array, so members taught with class
    names (``teach(X, ["cat", "dog"])``, which ``ClipPromptClassifier`` accepts) make every
    vote fail with "could not convert string to float". Here the votes are the predictions
    themselves: names or indices, whatever the members were taught.

    Parameters
    ----------
    learner_list : list of ActiveLearner
        The members.
    query_strategy : callable, default=vote_entropy_sampling
        modAL's committee strategy.
    on_transformed : bool, default=False
        As modAL's ``Committee``.
    """

    def vote(self, X, **predict_kwargs):
        """The predicted label of every member for every sample, ``(n_samples, n_members)``.

        Parameters
        ----------
        X : images
            The samples to vote on.
        **predict_kwargs
            Passed to the members' ``predict``.

        Returns
        -------
        ndarray of shape (n_samples, n_members)
            Class names or indices, as the members predict them.
        """
        return np.stack([np.asarray(learner.predict(X, **predict_kwargs)) for learner in self.learner_list], axis=1)


def prompt_committee(estimator, templates=CLIP_TEMPLATES, *, query_strategy=None, **learner_params):
    """A modAL ``Committee`` of clones of ``estimator``, one per prompt template.

    Member ``i`` is ``clone(estimator)`` with ``template=templates[i]`` and its own
    ``random_state`` (drawn from the estimator's, so a seeded estimator gives a
    reproducible committee), wrapped in an ``ActiveLearner``.

    Parameters
    ----------
    estimator : ClipPromptClassifier
        The members' settings (any other parameter is shared).
    templates : sequence of str, default=CLIP_TEMPLATES
        One member per template, each with ``{}`` for the class name; at least two.
    query_strategy : callable, optional
        A committee strategy (modAL's ``vote_entropy_sampling``, ``max_disagreement_sampling``,
        ``consensus_entropy_sampling``...); None keeps modAL's default (vote entropy).
    **learner_params
        Passed to every member's ``ActiveLearner`` (``X_training``, ``y_training``,
        ``bootstrap_init``...).

    Returns
    -------
    PromptCommittee
        A modAL ``Committee`` (whose votes also work for members taught with class names);
        ``committee.learner_list[i].estimator.template == templates[i]``.

    Raises
    ------
    ValueError
        Fewer than two templates, or a template without ``{}``.

    Examples
    --------
    >>> from modal_vlm import ClipPromptClassifier
    >>> committee = prompt_committee(ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit",
    ...                                                   random_state=0), templates=["a {}.", "a photo of a {}."])
    >>> [learner.estimator.template for learner in committee.learner_list]
    ['a {}.', 'a photo of a {}.']
    """
    templates = list(templates)
    if len(templates) < 2:
        raise ValueError(f"A committee needs at least two templates, got {templates!r}.")
    bad = [t for t in templates if not isinstance(t, str) or "{}" not in t]
    if bad:
        raise ValueError(f"Every template needs '{{}}' for the class name; these do not: {bad!r}.")
    seeds = check_random_state(estimator.random_state).randint(2**31 - 1, size=len(templates))
    seeded = estimator.random_state is not None
    members = [ActiveLearner(estimator=clone(estimator).set_params(template=template,
                                                                   random_state=int(seed) if seeded else None),
                             **learner_params)
               for template, seed in zip(templates, seeds)]
    committee_params = {} if query_strategy is None else {"query_strategy": query_strategy}
    return PromptCommittee(learner_list=members, **committee_params)
