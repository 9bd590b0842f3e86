"""Learning curves: accuracy against labels per strategy, mean ± std over seeds, as numbers
(final accuracy, area under the curve) and as a plot."""
from __future__ import annotations

import numpy as np


def area_under_curve(n_labeled, accuracy) -> float:
    """Normalised area under a learning curve: the trapezoidal area over the label axis
    divided by its length, i.e. the curve's mean accuracy (round 0, zero-shot, included).

    Examples
    --------
    >>> area_under_curve([0, 10, 20], [0.2, 0.4, 0.6])
    0.4
    """
    x, y = np.asarray(n_labeled, dtype=float), np.asarray(accuracy, dtype=float)
    if len(x) < 2 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def _by_strategy_and_round(records) -> dict:
    """``{strategy: {round: [records]}}``, strategies in order of first appearance."""
    grouped = {}
    for r in records:
        grouped.setdefault(r["strategy"], {}).setdefault(r["round"], []).append(r)
    return grouped


def learning_curves(records) -> dict:
    """Per strategy, the mean and std accuracy over seeds at each round.

    Parameters
    ----------
    records : list of dict
        Round records with ``strategy``, ``seed``, ``round``, ``n_labeled``, ``accuracy``.

    Returns
    -------
    dict
        ``{strategy: {"n_labeled": [...], "mean": [...], "std": [...], "n_seeds": [...]}}``,
        one entry per round that at least one seed has reached (``n_seeds`` counts them).

    Examples
    --------
    >>> records = [{"strategy": "cec", "seed": s, "round": 0, "n_labeled": 0, "accuracy": a}
    ...            for s, a in [(0, 0.25), (1, 0.75)]]
    >>> learning_curves(records)["cec"]
    {'n_labeled': [0], 'mean': [0.5], 'std': [0.25], 'n_seeds': [2]}
    """
    curves = {}
    for strategy, by_round in _by_strategy_and_round(records).items():
        rounds = sorted(by_round)
        accuracy = [np.array([r["accuracy"] for r in by_round[k]]) for k in rounds]
        curves[strategy] = {"n_labeled": [by_round[k][0]["n_labeled"] for k in rounds],
                            "mean": [float(a.mean()) for a in accuracy],
                            "std": [float(a.std()) for a in accuracy],
                            "n_seeds": [len(a) for a in accuracy]}
    return curves


def stop_round(run) -> int | None:
    """The first round of a run whose record says ``stable`` (the stopping signal), or None.

    Examples
    --------
    >>> stop_round([{"round": 0, "stable": False}, {"round": 1, "stable": True}]), stop_round([{"round": 0}])
    (1, None)
    """
    return next((r["round"] for r in run if r.get("stable")), None)


def summarize(records) -> list[dict]:
    """Final accuracy and area under the learning curve per strategy, mean ± std over seeds.

    Only complete runs count: those reaching the last round any run of the strategy reached.

    Returns
    -------
    list of dict
        ``strategy``, ``n_seeds``, ``n_labeled``, ``final_accuracy_mean``/``_std``,
        ``final_balanced_accuracy_mean``/``_std`` (the mean per-class accuracy, where the
        records hold it), ``aulc_mean``/``_std`` (see :func:`area_under_curve`), ``stop_round``
        (the mean over seeds of the first round the stopping signal said ``stable``; None if it
        never did), ``n_seeds_stable`` (the seeds it did in), and where the records count
        them, ``none_share_mean`` (the share of the labels spent on images of none of the
        classes).

    Examples
    --------
    >>> records = [{"strategy": "random", "seed": 0, "round": k, "n_labeled": 10 * k,
    ...             "accuracy": acc} for k, acc in enumerate([0.1, 0.3, 0.5])]
    >>> row = summarize(records)[0]
    >>> row["final_accuracy_mean"], row["aulc_mean"]
    (0.5, 0.3)
    """
    runs = {}
    for r in sorted(records, key=lambda r: r["round"]):
        runs.setdefault((r["strategy"], r["seed"]), []).append(r)
    rows = []
    for strategy in dict.fromkeys(r["strategy"] for r in records):
        mine = [run for (s, _), run in runs.items() if s == strategy]
        last = max(run[-1]["round"] for run in mine)
        complete = [run for run in mine if run[-1]["round"] == last]
        final = np.array([run[-1]["accuracy"] for run in complete])
        aulc = np.array([area_under_curve([r["n_labeled"] for r in run], [r["accuracy"] for r in run])
                         for run in complete])
        row = {"strategy": strategy, "n_seeds": len(complete), "n_labeled": complete[0][-1]["n_labeled"],
               "final_accuracy_mean": float(final.mean()), "final_accuracy_std": float(final.std())}
        if all("mean_per_class_accuracy" in run[-1] for run in complete):
            balanced = np.array([run[-1]["mean_per_class_accuracy"] for run in complete])
            row.update(final_balanced_accuracy_mean=float(balanced.mean()),
                       final_balanced_accuracy_std=float(balanced.std()))
        stops = [r for r in map(stop_round, complete) if r is not None]
        row.update(aulc_mean=float(aulc.mean()), aulc_std=float(aulc.std()),
                   stop_round=float(np.mean(stops)) if stops else None, n_seeds_stable=len(stops))
        if all("n_none" in run[-1] for run in complete) and row["n_labeled"]:
            row["none_share_mean"] = float(np.mean([run[-1]["n_none"] / run[-1]["n_labeled"] for run in complete]))
        rows.append(row)
    return rows


def estimate_curves(records) -> dict:
    """Per strategy, the accuracy estimate made without the test set (``estimate`` of the
    records), mean over seeds at each round where every seed has one.

    Returns
    -------
    dict
        ``{strategy: {"n_labeled": [...], "accuracy": [...], "low": [...], "high": [...]}}``;
        strategies without estimates are left out.

    Examples
    --------
    >>> records = [{"strategy": "cec", "seed": 0, "round": 1, "n_labeled": 10,
    ...             "estimate": {"accuracy": 0.5, "low": 0.4, "high": 0.6, "n": 10}}]
    >>> estimate_curves(records)["cec"]["low"]
    [0.4]
    """
    curves = {}
    for strategy, by_round in _by_strategy_and_round(records).items():
        rounds = [k for k in sorted(by_round) if all(r.get("estimate") for r in by_round[k])]
        if rounds:
            curves[strategy] = {"n_labeled": [by_round[k][0]["n_labeled"] for k in rounds],
                                **{key: [float(np.mean([r["estimate"][key] for r in by_round[k]])) for k in rounds]
                                   for key in ("accuracy", "low", "high")}}
    return curves


def plot_learning_curves(records, path, title=None):
    """Save a plot of accuracy against labels: one line per strategy (mean over seeds) with a
    band of ± one standard deviation, and the zero-shot accuracy (round 0) as a dashed level
    that labels are meant to beat. Where the records hold the estimate made without the test
    set (``estimate``), it is drawn beside the true curve in the strategy's colour: a dotted
    line inside a hatched band (the interval, means over seeds).

    Parameters
    ----------
    records : list of dict
        See :func:`learning_curves`.
    path : str or path-like
        Image file to write (PNG, or any format matplotlib infers from the suffix).
    title : str, optional

    Returns
    -------
    path

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install modal-vlm[plot]``).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> records = [{"strategy": "cec", "seed": 0, "round": k, "n_labeled": 10 * k,
    ...             "accuracy": 0.3 + 0.1 * k} for k in range(3)]
    >>> path = plot_learning_curves(records, pathlib.Path(tempfile.mkdtemp()) / "curve.png")
    >>> path.stat().st_size > 0
    True
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axes = figure.subplots()
    # Every run starts from the same zero-shot model, so round 0 is one level for all.
    zero_shot = [r["accuracy"] for r in records if r["round"] == 0]
    if zero_shot:
        axes.axhline(100 * float(np.mean(zero_shot)), color="0.4", linestyle="--", linewidth=1,
                     label=f"zero-shot ({100 * float(np.mean(zero_shot)):.1f} %)")
    estimates = estimate_curves(records)
    for strategy, curve in learning_curves(records).items():
        x, mean, std = (np.asarray(curve[k], dtype=float) for k in ("n_labeled", "mean", "std"))
        seeds = max(curve["n_seeds"])
        band = ", band ± 1 std" if seeds > 1 else ""
        line, = axes.plot(x, 100 * mean, marker="o", markersize=3,
                          label=f"{strategy} (mean of {seeds} seed{'s' if seeds > 1 else ''}{band})")
        axes.fill_between(x, 100 * (mean - std), 100 * (mean + std), color=line.get_color(), alpha=0.2)
        if strategy in estimates:
            x_est, est = estimates[strategy]["n_labeled"], {k: 100 * np.asarray(estimates[strategy][k], dtype=float)
                                                          for k in ("accuracy", "low", "high")}
            axes.plot(x_est, est["accuracy"], linestyle=":", color=line.get_color(),
                      label=f"{strategy}: estimate without the test set")
            axes.fill_between(x_est, est["low"], est["high"], facecolor="none", edgecolor=line.get_color(),
                              hatch="//", linewidth=0, alpha=0.5)
    axes.set_xlabel("labeled images")
    axes.set_ylabel("test accuracy (%)")
    axes.grid(alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title)
    figure.savefig(path, dpi=120)
    return path
