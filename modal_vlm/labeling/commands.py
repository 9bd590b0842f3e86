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
import sys
from pathlib import Path

from .exports import EXPORTS, NothingToExport, render
from .labelstudio import LOCAL_FILES_PREFIX, import_label_studio
from .project import DEFAULT_MODEL, DEFAULT_STRATEGY, FIT_MODES, LEARNERS, Project, open_project
from .store import LabelStore

DEFAULT_PORT = 8765
#: ``label-studio-backend``'s port (the official backends' default) and retraining debounce.
DEFAULT_BACKEND_PORT = 9090
DEFAULT_DEBOUNCE = 1.0


SERVE_DESCRIPTION = """\
Label images in the browser: the strategy picks a batch, you label it (the model's guess is
pre-selected: a right guess costs one key), the model retrains in the background and the next
batch is better chosen. Everything lives in --project: the labels (SQLite), the settings, the
image embeddings and the trained model. Run the same command again, or just
'modal-vlm label --project DIR', to resume."""


def _add_project_arguments(p) -> None:
    """The project, its images and classes, the model and strategy: ``label`` and
    ``label-studio-backend`` share them."""
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
    model.add_argument("--audit-fraction", type=float, metavar="F",
                       help="share of each batch drawn at random, for the accuracy estimate in the header "
                            "(default 0.2; 0: none)")


def _add_server_arguments(p, port, elsewhere):
    """``--host`` and ``--port``; ``elsewhere``: what another address than 127.0.0.1 requires."""
    server = p.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1",
                        help=f"address to listen on (default 127.0.0.1; any other address requires {elsewhere})")
    server.add_argument("--port", type=int, default=port, help=f"port (default {port}; 0: any free)")
    return server


def _add_serve_arguments(p) -> None:
    _add_project_arguments(p)
    _add_server_arguments(p, DEFAULT_PORT, "the token printed in the URL")


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
                   help="label-studio: the batch to export (default: the open one; one batch per file)")
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
        project = _open(args, "modal-vlm label")
        from .server import serve   # the web stack: the 'app' extra

        serve(project, args.host, args.port,
              announce=lambda url: print(f"Open {url} in a browser (Ctrl-C stops; every label is "
                                         f"saved as you go).", flush=True))
    except KeyboardInterrupt:   # uvicorn re-raises the Ctrl-C it handled
        pass
    print(f"modal-vlm label: stopped; run the same command to resume {args.project}", flush=True)
    return 0


def _open(args, prog):
    """Open or create the project of ``_add_project_arguments``' options, and say what it is."""
    project, notes = open_project(
        args.project, args.images_dir, _classes(args), model=args.model, pretrained=args.pretrained,
        strategy=args.strategy, batch_size=args.batch_size, train_steps=args.train_steps,
        fit_mode=args.fit_mode, seed=args.seed, device=args.device, audit_fraction=args.audit_fraction,
        learner=args.learner)
    s = project.settings
    print(f"{prog}: project {project.root} ({'; '.join(notes) or 'resumed'})\n"
          f"  images: {s.images_dir}\n  classes: {', '.join(s.classes)}\n"
          f"  model: {s.model}, {s.learner} learner, strategy: {s.strategy}, {s.images_per_batch} images per batch\n"
          f"  labels so far: {_counts(project)}", flush=True)
    return project


def _counts(project) -> str:
    store = LabelStore(project.database)
    try:
        counts = store.counts(project.settings.classes)
    finally:
        store.close()
    n = sum(counts["per_class"].values())
    return f"{n} class labels, {counts['ood']} none-of-these, {counts['skip']} skipped"


def _write(content, out, contents) -> None:
    """Write an export (text, or bytes: the model) to ``out`` (standard output when None) and
    say what was written (on standard error, so that a piped export stays clean)."""
    if out is None:
        sys.stdout.write(content if content.endswith("\n") else content + "\n")
        sys.stdout.flush()
    elif isinstance(content, bytes):
        Path(out).write_bytes(content)
    else:
        Path(out).write_text(content, encoding="utf-8")
    print(f"wrote {out or 'standard output'} ({contents})", file=sys.stderr)


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
    if args.format is not None and args.what != "labels":
        raise ValueError("--format applies to --what labels only")
    if args.what == "model" and args.out is None:
        raise ValueError("--what model needs --out FILE (a pickle is not for a terminal)")
    store = LabelStore(project.database)
    try:
        session = None
        if args.what == "predictions":   # the saved model (zero-shot before one), every image encoded
            from .session import LabelingSession

            session = LabelingSession(project, store)
            session.prepare(encode_all=True)
        try:
            export = render(args.what, project, store, format=args.format, session=session, batch=args.batch,
                            url_prefix=args.url_prefix)
        except NothingToExport as exc:
            raise ValueError(f"{project.root}: {exc}") from None
        _write(export.content, args.out, export.summary)
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


BACKEND_DESCRIPTION = """\
Serve the project to Label Studio as an ML backend (Label Studio > project Settings > Model >
Connect Model, URL as printed): every task gets the model's class as a pre-annotation and the
strategy's priority as its prediction score; after each burst of annotations the model
retrains and the priorities are refreshed in Label Studio, so that the Data Manager sorted by
prediction score shows the next batch to label first. The project directory is the same as
'modal-vlm label' uses (labels, model, embeddings): both front ends share it, one at a time.

Label Studio must be allowed to call a backend on this machine: start it with
ML_BLOCK_LOCAL_IP=false and SSRF_PROTECTION_ENABLED=false when both run on localhost."""


def _add_backend_arguments(p) -> None:
    import os

    _add_project_arguments(p)
    ls = p.add_argument_group("Label Studio")
    ls.add_argument("--label-studio-url", default=os.environ.get("LABEL_STUDIO_URL"), metavar="URL",
                    help="Label Studio's address, to push priorities and fetch /data/ files "
                         "(default: $LABEL_STUDIO_URL)")
    ls.add_argument("--api-key", default=os.environ.get("LABEL_STUDIO_API_KEY"), metavar="KEY",
                    help="a personal access token (or a legacy token) of a Label Studio user who may "
                         "change the project (default: $LABEL_STUDIO_API_KEY, which keeps it out of "
                         "the process list)")
    ls.add_argument("--document-root", default=os.environ.get("LOCAL_FILES_DOCUMENT_ROOT"), metavar="DIR",
                    help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT, where local-storage paths start "
                         "(default: $LOCAL_FILES_DOCUMENT_ROOT)")
    ls.add_argument("--debounce", type=float, default=DEFAULT_DEBOUNCE, metavar="SECONDS",
                    help=f"retrain once no annotation arrived for this long (default {DEFAULT_DEBOUNCE})")
    server = _add_server_arguments(p, DEFAULT_BACKEND_PORT, "basic auth")
    server.add_argument("--basic-auth-user", default=os.environ.get("BASIC_AUTH_USER"), metavar="USER",
                        help="require HTTP basic auth (default: $BASIC_AUTH_USER)")
    server.add_argument("--basic-auth-pass", default=os.environ.get("BASIC_AUTH_PASS"), metavar="PASSWORD",
                        help="its password (default: $BASIC_AUTH_PASS)")


def backend_command(args) -> int:
    """``modal-vlm label-studio-backend``: serve the project to Label Studio until Ctrl-C.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options.

    Returns
    -------
    int
        The exit status.
    """
    if (args.basic_auth_user is None) != (args.basic_auth_pass is None):
        raise ValueError("give both --basic-auth-user and --basic-auth-pass, or neither")
    if args.debounce < 0:
        raise ValueError(f"--debounce must be >= 0, got {args.debounce}")
    prog = "modal-vlm label-studio-backend"
    try:
        project = _open(args, prog)
        from .labelstudio_backend import serve_backend   # the web stack: the 'app' extra

        auth = None if args.basic_auth_user is None else (args.basic_auth_user, args.basic_auth_pass)
        serve_backend(project, args.host, args.port, label_studio_url=args.label_studio_url,
                      api_key=args.api_key, document_root=args.document_root, basic_auth=auth,
                      debounce=args.debounce,
                      announce=lambda url: print(f"Label Studio ML backend at {url} (connect it in the project's "
                                                 f"Settings > Model; Ctrl-C stops)", flush=True))
    except KeyboardInterrupt:
        pass
    print(f"{prog}: stopped; every annotation received is in {args.project}", flush=True)
    return 0


def add_label_studio_backend_parser(sub) -> None:
    """Register ``label-studio-backend`` with ``modal-vlm``.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        ``modal-vlm``'s sub-command registry.
    """
    p = sub.add_parser("label-studio-backend", help="serve a labeling project to Label Studio as its ML backend",
                       description=BACKEND_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_backend_arguments(p)
    p.set_defaults(func=backend_command)


__all__ = ["add_label_parser", "add_label_studio_backend_parser", "backend_command", "export_command",
           "import_command", "serve_command"]
