"""``modal-vlm label``: the labeling app's command line.

Three commands share the ``label`` name::

    modal-vlm label IMAGES_DIR --classes cat dog --project DIR   # serve the app
    modal-vlm label export --project DIR --what predictions      # files out
    modal-vlm label import LS_EXPORT.json --project DIR          # Label Studio labels in

:func:`add_label_parser` registers them with ``modal-vlm``'s parser. Nothing here imports
the web stack until the server starts (the ``app`` extra: FastAPI and uvicorn).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .exports import EXPORTS, labels_csv, labels_json, predictions_csv
from .labelstudio import LOCAL_FILES_PREFIX, import_label_studio, label_studio_config, label_studio_tasks
from .project import DEFAULT_MODEL, DEFAULT_STRATEGY, FIT_MODES, LEARNERS, Project, open_project
from .store import LabelStore

DEFAULT_PORT = 8765


SERVE_DESCRIPTION = """\
Label images in the browser: the strategy picks a batch, you label it (the model's guess is
pre-selected: a right guess costs one key), the model retrains in the background and the next
batch is better chosen. Everything lives in --project: the labels (SQLite), the settings, the
image embeddings and the trained model. Run the same command again, or just
'modal-vlm label --project DIR', to resume."""


def _add_serve_arguments(p) -> None:
    p.add_argument("images_dir", nargs="?", metavar="IMAGES_DIR",
                   help="folder of images, any layout (read recursively); required for a new project")
    p.add_argument("--project", required=True, metavar="DIR", help="project directory (created if absent)")
    classes = p.add_mutually_exclusive_group()
    classes.add_argument("--classes", nargs="+", metavar="NAME", help="class names")
    classes.add_argument("--classes-file", metavar="FILE",
                         help="class names, one per line ('#' comments and blank lines ignored)")
    model = p.add_argument_group("model and strategy (stored in the project; may change on resume)")
    model.add_argument("--model", metavar="NAME", help=f"backbone (default {DEFAULT_MODEL}: offline, no GPU)")
    model.add_argument("--pretrained", metavar="TAG|FILE", help="open_clip tag or local weights file")
    model.add_argument("--strategy", metavar="NAME", help=f"query strategy (default {DEFAULT_STRATEGY})")
    model.add_argument("--batch", type=int, metavar="N", dest="batch_size",
                       help="images per batch (default: the number of classes, within 8..32)")
    model.add_argument("--learner", choices=LEARNERS,
                       help="linear: a zero-shot-initialised linear head, retrained in under a second "
                            "(default); prompt: CoOp prompt tuning, seconds to minutes per retraining")
    model.add_argument("--train-steps", type=int, metavar="N",
                       help="optimizer steps per retraining, which bound its time (default: the "
                            "learner's, 200 for linear, the shot schedule capped at 100 for prompt)")
    model.add_argument("--fit-mode", choices=FIT_MODES,
                       help="ueo: also learn from unlabeled images and those labeled 'none of these "
                            "classes' (UEO's unlabeled loss; default supervised)")
    model.add_argument("--seed", type=int, metavar="N", help="seed of training and queries (default 0)")
    model.add_argument("--device", metavar="NAME", help="torch device (default cpu)")
    server = p.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; any other address requires "
                             "the token printed in the URL)")
    server.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")


def _export_parser(prog) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Write a project's labels, predictions, model or Label Studio files "
                               "(works while the server runs).")
    p.add_argument("--project", required=True, metavar="DIR", help="project directory")
    p.add_argument("--what", choices=list(EXPORTS), default="labels",
                   help="labels (CSV/JSON), predictions for every image (CSV), the trained model "
                        "(pickle), a batch as Label Studio tasks with the model's guesses, the Label "
                        "Studio labeling config (default labels)")
    p.add_argument("--format", choices=["csv", "json"], help="labels only: csv (default) or json "
                                                             "(with the full edit history)")
    p.add_argument("--out", metavar="FILE", help="output file (default: standard output; required for model)")
    p.add_argument("--batch", type=int, metavar="ID",
                   help="label-studio: the batch to export (default: the open one)")
    p.add_argument("--url-prefix", default=LOCAL_FILES_PREFIX,
                   help=f"label-studio: prefix of image URLs (default {LOCAL_FILES_PREFIX!r}, Label "
                        "Studio's local files)")
    return p


def _import_parser(prog) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Import a Label Studio JSON export as labels "
                                                       "(new events: earlier labels stay in the history).")
    p.add_argument("file", metavar="LS_EXPORT", help="Label Studio export in its JSON format")
    p.add_argument("--project", required=True, metavar="DIR", help="project directory")
    p.add_argument("--skip-unknown", action="store_true",
                   help="leave out images that are not in the project instead of refusing the file")
    return p


def _classes(args):
    if args.classes_file is None:
        return args.classes
    names = [line.split("#", 1)[0].strip() for line in Path(args.classes_file).read_text().splitlines()]
    return [name for name in names if name]


def serve_command(args) -> int:
    """``modal-vlm label IMAGES_DIR ...``: open or create the project, serve it until Ctrl-C.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options.

    Returns
    -------
    int
        The exit status.
    """
    try:
        project, notes = open_project(
            args.project, args.images_dir, _classes(args), model=args.model, pretrained=args.pretrained,
            strategy=args.strategy, batch_size=args.batch_size, train_steps=args.train_steps,
            fit_mode=args.fit_mode, seed=args.seed, device=args.device, learner=args.learner)
        from .server import serve   # the web stack: the 'app' extra

        s = project.settings
        print(f"modal-vlm label: project {project.root} ({'; '.join(notes) or 'resumed'})\n"
              f"  images: {s.images_dir}\n  classes: {', '.join(s.classes)}\n"
              f"  model: {s.model}, strategy: {s.strategy}, {s.images_per_batch} images per batch\n"
              f"  labels so far: {_counts(project)}", flush=True)
        serve(project, args.host, args.port,
              announce=lambda url: print(f"Open {url} in a browser (Ctrl-C stops; every label is "
                                         f"saved as you go).", flush=True))
    except KeyboardInterrupt:   # uvicorn re-raises the Ctrl-C it handled
        pass
    print(f"modal-vlm label: stopped; run the same command to resume {args.project}", flush=True)
    return 0


def _counts(project) -> str:
    store = LabelStore(project.database)
    try:
        counts = store.counts(project.settings.classes)
    finally:
        store.close()
    n = sum(counts["per_class"].values())
    return f"{n} class labels, {counts['ood']} none-of-these, {counts['skip']} skipped"


def _write(text, out) -> None:
    if out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        Path(out).write_text(text, encoding="utf-8")


def export_command(args) -> int:
    """``modal-vlm label export``: labels, predictions, model or Label Studio files.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options.

    Returns
    -------
    int
        The exit status.
    """
    project = Project.load(args.project)
    settings = project.settings
    if args.format is not None and args.what != "labels":
        raise ValueError("--format applies to --what labels only")
    if args.what == "model":
        if args.out is None:
            raise ValueError("--what model needs --out FILE (a pickle is not for a terminal)")
        if not project.model_file.is_file():
            raise ValueError(f"{project.root} has no trained model yet: it is saved after the first batch")
        shutil.copyfile(project.model_file, args.out)
        info = project.model_info()
        print(f"wrote {args.out}: trained after {info['round']} batches on {info['n_labels']} labels",
              file=sys.stderr)
        return 0
    if args.what == "label-studio-config":
        _write(label_studio_config(settings.classes), args.out)
        return 0
    store = LabelStore(project.database)
    try:
        if args.what == "labels":
            text = labels_csv(store) if args.format in (None, "csv") else \
                json.dumps(labels_json(store, settings), indent=1)
        elif args.what == "label-studio":
            batch = store.batch(args.batch)
            if batch is None:
                raise ValueError("no open batch" if args.batch is None else f"no batch with id {args.batch}")
            text = json.dumps(label_studio_tasks(batch, f"modal-vlm round {batch['model_round']}",
                                                 args.url_prefix), indent=1)
        else:  # predictions: the saved model (zero-shot before one), every image encoded
            from .worker import LabelingWorker

            worker = LabelingWorker(project, store)
            worker.prepare(encode_all=True)
            images, proba = worker.predict()
            text = predictions_csv(store, settings, images, proba, worker.model_info)
        _write(text, args.out)
    finally:
        store.close()
    return 0


def import_command(args) -> int:
    """``modal-vlm label import``: a Label Studio JSON export's labels into the project.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options.

    Returns
    -------
    int
        The exit status.
    """
    project = Project.load(args.project)
    try:
        tasks = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{args.file} is not JSON: {exc}") from None
    store = LabelStore(project.database)
    try:
        summary = import_label_studio(store, project.settings.classes, tasks, args.skip_unknown)
    finally:
        store.close()
    print(f"imported {summary['imported']} labels into {project.root} ({summary['unchanged']} unchanged, "
          f"{summary['unannotated']} tasks without a choice, {summary['unknown']} images not in the project)")
    return 0


def add_label_parser(sub) -> None:
    """Register ``label`` (serve), ``label export`` and ``label import`` with ``modal-vlm``.

    argparse has no optional sub-command beside a positional argument, so the ``label``
    parser serves, hands ``label export ...`` and ``label import ...`` to their own parsers,
    and appends their help to its own.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        ``modal-vlm``'s sub-command registry.
    """
    prog = "modal-vlm label"
    others = {"export": _export_parser(f"{prog} export"), "import": _import_parser(f"{prog} import")}
    others["export"].set_defaults(func=export_command)
    others["import"].set_defaults(func=import_command)
    p = sub.add_parser("label", help="label images in the browser (active learning with a person)",
                       description=SERVE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_serve_arguments(p)
    p.set_defaults(func=serve_command)
    parse_serve, format_serve = p.parse_known_args, p.format_help

    def parse_known_args(args=None, namespace=None):
        if args and args[0] in others:
            return others[args[0]].parse_known_args(args[1:], namespace)
        return parse_serve(args, namespace)

    def format_help():
        return "\n".join([format_serve(), "other label commands:", ""]
                         + [parser.format_help() for parser in others.values()])

    p.parse_known_args, p.format_help = parse_known_args, format_help


__all__ = ["add_label_parser", "export_command", "import_command", "serve_command"]
