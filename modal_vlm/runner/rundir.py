"""The run directory: an experiment's settings and round records, written atomically.

Layout (every file is replaced atomically: a reader, or a process killed at any moment,
sees either the old or the new version, never a partial one; files get the usual mode,
``0666`` less the umask, e.g. ``0644``):

``config.json``
    The resolved settings and a summary of the data. Written first; a run directory belongs
    to one configuration.
``rounds.json``
    Every finished round of every (strategy, seed) run: the checkpoint. Rewritten after each
    round.
``rounds.csv``
    The same records as a flat table.
``summary.json``, ``learning_curve.png``
    Written when the experiment ends (see :mod:`modal_vlm.runner.curves`).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .._files import with_legacy_settings, write_atomic
from ..exceptions import RunDirectoryError

CONFIG = "config.json"
ROUNDS_JSON = "rounds.json"
ROUNDS_CSV = "rounds.csv"
SUMMARY = "summary.json"
PLOT = "learning_curve.png"
#: Every file a run writes; ``overwrite`` removes these and nothing else.
RUN_FILES = (CONFIG, ROUNDS_JSON, ROUNDS_CSV, SUMMARY, PLOT)
#: Settings added after run directories were first written, with the value a run directory
#: without them ran with: such a run resumes with these values, and says so otherwise.
LEGACY_SETTINGS = {"audit_fraction": 0.0, "label_noise": 0.0}


#: What every round record holds, and of which JSON type (checked when a run is resumed).
RECORD_FIELDS = {"strategy": str, "seed": int, "round": int, "n_labeled": int, "accuracy": (int, float),
                 "queried": list}
#: What a run directory says to do when one of its files is damaged.
DAMAGED_ADVICE = ("Nothing was changed. Restore the file, use another output folder, or --overwrite "
                  "(overwrite=True) to start this run afresh.")


def _read_json(path: Path, kind):
    """The JSON value of a run file, which must be of ``kind``; a damaged one raises
    :class:`RunDirectoryError` naming it."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirectoryError(f"{path} is damaged (not JSON: {exc}). {DAMAGED_ADVICE}") from None
    if not isinstance(value, kind):
        raise RunDirectoryError(f"{path} is damaged (a JSON {type(value).__name__}, not the "
                                f"{'object' if kind is dict else 'list'} a run writes). {DAMAGED_ADVICE}")
    return value


def check_records(records, header: dict, path) -> None:
    """Raise :class:`RunDirectoryError` naming the first record of ``rounds.json`` that is not
    a round of the run ``header`` describes.

    Parameters
    ----------
    records : list
        The records read from ``path``.
    header : dict
        The run's settings (``config.strategies``, ``config.seeds``, ``config.rounds``) and data
        (``data.n_pool``); settings it lacks are not checked.
    path : path-like
        ``rounds.json``, for the message.

    Raises
    ------
    RunDirectoryError
        A record that is not an object, lacks a field or has one of the wrong type, belongs to
        a strategy or seed the run does not have, repeats a round, lies beyond the last round,
        or labels pool indices outside the pool.
    """
    config, n_pool = header.get("config", {}), header.get("data", {}).get("n_pool")
    strategies, seeds, rounds = config.get("strategies"), config.get("seeds"), config.get("rounds")
    seen = set()
    for number, record in enumerate(records):
        where = f"{path} record {number}"
        if not isinstance(record, dict):
            raise RunDirectoryError(f"{where} is not a round record (a JSON {type(record).__name__}). {DAMAGED_ADVICE}")
        for field, kind in RECORD_FIELDS.items():
            value = record.get(field)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise RunDirectoryError(f"{where} has no valid {field!r} (got {value!r}). {DAMAGED_ADVICE}")
        run = f"strategy {record['strategy']!r}, seed {record['seed']}, round {record['round']}"
        if (strategies is not None and record["strategy"] not in strategies) or \
                (seeds is not None and record["seed"] not in seeds):
            raise RunDirectoryError(f"{where} ({run}) is not a run of this experiment (strategies {strategies}, "
                                    f"seeds {seeds}). {DAMAGED_ADVICE}")
        if not 0 <= record["round"] <= (rounds if isinstance(rounds, int) else record["round"]):
            raise RunDirectoryError(f"{where} ({run}) lies outside rounds 0..{rounds}. {DAMAGED_ADVICE}")
        key = (record["strategy"], record["seed"], record["round"])
        if key in seen:
            raise RunDirectoryError(f"{where} ({run}) repeats a round. {DAMAGED_ADVICE}")
        seen.add(key)
        indices = record["queried"] + list(record.get("pseudo_labeled") or [])
        if n_pool is not None and any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_pool
                                      for i in indices):
            raise RunDirectoryError(f"{where} ({run}) labels pool indices outside 0..{n_pool - 1}: "
                                    f"{[i for i in indices if not isinstance(i, int) or not 0 <= i < n_pool][:5]}. "
                                    f"{DAMAGED_ADVICE}")


def _json_bytes(value) -> bytes:
    return (json.dumps(value, indent=1, allow_nan=True) + "\n").encode()


def _differences(old, new, prefix="") -> list[str]:
    """``key: old -> new`` for every leaf where two nested dicts differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in sorted(set(old) | set(new), key=str)
                for line in _differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def records_csv(records, class_names) -> str:
    """The round records as CSV: one row per round, one column per class for the class
    counts (``labels[NAME]``) and accuracies (``accuracy[NAME]``).

    ``n_labeled`` and ``labels[NAME]`` count oracle labels; ``n_pseudo_labeled``,
    ``pseudo_labeled``, ``pseudo_labels`` and ``pseudo_correct`` describe the samples a
    strategy labeled itself (0 and empty for strategies that do not, and for records written
    before these fields existed). ``estimate``, ``estimate_low``, ``estimate_high`` and
    ``estimate_n`` are the accuracy estimate made without the test set, ``stable`` the
    stopping signal, ``n_suspect`` the number of suspect labels (empty where a record has
    none of these).

    Examples
    --------
    >>> record = {"strategy": "cbsq", "seed": 0, "round": 2, "n_labeled": 4, "n_pseudo_labeled": 1,
    ...           "accuracy": 0.5, "mean_per_class_accuracy": 0.5, "per_class_accuracy": [1.0, None],
    ...           "class_counts": [2, 2], "queried": [4, 7], "queried_labels": [0, 1],
    ...           "pseudo_labeled": [3], "pseudo_labels": [1], "pseudo_correct": 1,
    ...           "seconds": {"encode": 0.0, "query": 0.1, "train": 2.0, "evaluate": 0.2}}
    >>> print(records_csv([record], ["cat", "dog"]).splitlines()[1])
    cbsq,0,2,4,0.5,0.5,1.0,,2,2,4 7,0 1,1,3,1,1,0.0,0.1,2.0,0.2,,,,,,
    """
    header = (["strategy", "seed", "round", "n_labeled", "accuracy", "mean_per_class_accuracy"]
              + [f"accuracy[{name}]" for name in class_names] + [f"labels[{name}]" for name in class_names]
              + ["queried", "queried_labels", "n_pseudo_labeled", "pseudo_labeled", "pseudo_labels",
                 "pseudo_correct", "encode_s", "query_s", "train_s", "evaluate_s",
                 "estimate", "estimate_low", "estimate_high", "estimate_n", "stable", "n_suspect"])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for r in records:
        seconds = r["seconds"]
        writer.writerow([r["strategy"], r["seed"], r["round"], r["n_labeled"], r["accuracy"],
                         r["mean_per_class_accuracy"], *r["per_class_accuracy"], *r["class_counts"],
                         " ".join(map(str, r["queried"])), " ".join(map(str, r["queried_labels"])),
                         r.get("n_pseudo_labeled", 0), " ".join(map(str, r.get("pseudo_labeled", []))),
                         " ".join(map(str, r.get("pseudo_labels", []))), r.get("pseudo_correct", 0),
                         seconds["encode"], seconds["query"], seconds["train"], seconds["evaluate"],
                         *(r["estimate"][key] if r.get("estimate") else "" for key in ("accuracy", "low", "high", "n")),
                         r.get("stable", ""), len(r["suspect_labels"]) if "suspect_labels" in r else ""])
    return out.getvalue()


class RunDirectory:
    """An experiment's output folder: its settings, and the records of its finished rounds.

    Parameters
    ----------
    path : str or path-like
        Created on :meth:`open` if missing.

    Examples
    --------
    >>> import tempfile
    >>> run_dir = RunDirectory(tempfile.mkdtemp())
    >>> run_dir.open({"config": {"rounds": 8}, "data": {"class_names": ["a", "b"]}})
    []
    >>> run_dir.open({"config": {"rounds": 4}, "data": {"class_names": ["a", "b"]}})
    ... # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    RunDirectoryError: ... holds a run with other settings (config.rounds: 8 -> 4). ...
    """

    def __init__(self, path):
        self.path = Path(path)
        self.records: list[dict] = []
        self.class_names: list[str] = []

    def read(self, header: dict, overwrite: bool = False) -> list[dict]:
        """What :meth:`open` would continue from, checked, without writing anything.

        Parameters
        ----------
        header : dict
            The settings to compare with the stored ones, as for :meth:`open`.
        overwrite : bool, default=False
            Ignore the run in the directory (nothing is removed here).

        Returns
        -------
        list of dict
            The finished rounds :meth:`open` would continue from; none without a run.

        Raises
        ------
        RunDirectoryError
            Where :meth:`open` would refuse the directory: a run with other settings, damaged
            run files (named), or files named like run files in a folder that holds no run.
        """
        if overwrite or not self.path.is_dir():
            return []
        config_path = self.path / CONFIG
        if config_path.exists():
            stored = _read_json(config_path, dict)
            if not isinstance(stored.get("config"), dict) or not isinstance(stored.get("data"), dict):
                raise RunDirectoryError(f"{config_path} is damaged (no 'config' and 'data' settings). {DAMAGED_ADVICE}")
            if isinstance(header.get("config"), dict):
                stored["config"] = with_legacy_settings(stored["config"], LEGACY_SETTINGS, only=header["config"])
            changes = _differences({k: v for k, v in stored.items() if k != "versions"},
                                   {k: v for k, v in header.items() if k != "versions"})
            if changes:
                raise RunDirectoryError(
                    f"{self.path} holds a run with other settings ({'; '.join(changes[:8])}). "
                    "Use another output folder, or --overwrite (overwrite=True) to replace that run.")
            rounds_path = self.path / ROUNDS_JSON
            if not rounds_path.exists():
                return []
            records = _read_json(rounds_path, list)
            check_records(records, header, rounds_path)
            return records
        if (self.path / ROUNDS_JSON).exists():
            raise RunDirectoryError(f"{self.path} has {ROUNDS_JSON} but no {CONFIG}: not a complete "
                                    "modal-vlm run. Use another output folder, or --overwrite.")
        named_like_ours = [name for name in RUN_FILES if (self.path / name).exists()]
        if named_like_ours:
            raise RunDirectoryError(f"{self.path} is not a modal-vlm run (no {CONFIG}) but holds "
                                    f"{', '.join(named_like_ours)}, which a run would replace. Use another "
                                    "output folder, or --overwrite (overwrite=True) to replace them.")
        return []

    def open(self, header: dict, overwrite: bool = False) -> list[dict]:
        """Start a new run, or continue the one with the same ``header``.

        Parameters
        ----------
        header : dict
            ``{"config": ..., "data": {"class_names": ...}, ...}``; what must match to
            continue a run (``"versions"``, if present, is recorded but not compared).
        overwrite : bool, default=False
            Remove the run files (:data:`RUN_FILES`, nothing else) and start afresh.

        Returns
        -------
        list of dict
            The records of the rounds already done (empty for a new run).

        Raises
        ------
        RunDirectoryError
            The directory holds a run with other settings, or rounds without settings.
        """
        self.records = self.read(header, overwrite)
        self.path.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
        if not (self.path / CONFIG).exists():
            write_atomic(self.path / CONFIG, _json_bytes(header))
        self.class_names = list(header["data"]["class_names"])
        return list(self.records)

    def runs(self) -> dict:
        """The records grouped by run: ``{(strategy, seed): [record, ...]}``.

        Returns
        -------
        dict
            ``(strategy, seed)`` -> that run's records, in round order.
        """
        grouped = {}
        for record in self.records:
            grouped.setdefault((record["strategy"], record["seed"]), []).append(record)
        return grouped

    def add_round(self, record: dict) -> None:
        """Append one finished round (with ``strategy`` and ``seed``) and checkpoint.

        ``rounds.json`` and ``rounds.csv`` are rewritten atomically, so a process killed at
        any moment leaves every round before this one on disk.

        Parameters
        ----------
        record : dict
            The round record (see :func:`modal_vlm.experiment.run_active_learning`) with its
            run's ``strategy`` and ``seed``.
        """
        self.records.append(record)
        write_atomic(self.path / ROUNDS_JSON, _json_bytes(self.records))
        write_atomic(self.path / ROUNDS_CSV, records_csv(self.records, self.class_names).encode())

    def write_json(self, name: str, value) -> Path:
        """Write ``value`` as ``name`` in the directory (atomically); returns its path.

        Parameters
        ----------
        name : str
            File name inside the directory, e.g. ``"summary.json"``.
        value : object
            JSON-serialisable value (NaN and infinities allowed).

        Returns
        -------
        pathlib.Path
            The file written.
        """
        path = self.path / name
        write_atomic(path, _json_bytes(value))
        return path
