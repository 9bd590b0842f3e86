"""The web server of ``modal-vlm label``: a FastAPI app on uvicorn.

It serves exactly three kinds of things: the app's own pages and assets (read from the
package into memory at start-up, by name), the images the scan found (by id, each checked
again to lie inside the image folder), and the JSON API over the label store.

Who may connect:

* by default the server binds to 127.0.0.1 and answers only requests whose ``Host`` is a
  loopback name (a web page elsewhere cannot reach it through DNS rebinding);
* on any other ``--host`` a random token is required in every URL (``?token=``), pages,
  images and API alike; the start-up line prints the URL with it.

Every ``POST`` takes JSON (``Content-Type: application/json``: a form on another site cannot
post here without a CORS preflight, which is never granted) of bounded size; malformed JSON,
NaN and infinities, wrong types, ids beyond SQLite's integers, unknown ids, stale batches and
labels of an image changed in another window since the page showed it (optimistic
concurrency: a label names the event the page saw, ``seen_event``) get a 4xx answer naming
the problem, and change nothing. No other site may embed the images
(``Cross-Origin-Resource-Policy: same-origin``).
"""
from __future__ import annotations

import functools
import importlib.resources
import io
import mimetypes
import secrets
import socket
from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from ..exceptions import LabelConflict, UnknownImage
from ._middleware import guard, is_loopback
from .exports import NothingToExport, render
from .labelstudio import OOD_CHOICE, import_label_studio
from .scan import resolve_inside
from .store import Decision

#: Request bodies above this many bytes are refused (413), except on the import endpoint.
MAX_BODY = 64 * 1024
#: The Label Studio import takes files up to this size.
MAX_IMPORT_BODY = 32 * 1024 * 1024
IMPORT_PATH = "/api/import/label-studio"
#: Thumbnail sizes the pages ask for (any size in this range is accepted).
MIN_SIZE, MAX_SIZE = 16, 2048
#: Ids are SQLite integers: anything larger is refused (422), never passed to the database.
MAX_ID = 2 ** 63 - 1
#: An id in a URL or a body: a non-negative SQLite integer.
Id = Annotated[StrictInt, Field(ge=0, le=MAX_ID)]
#: Images (by id) do not change; pages and API answers do (``no-store``, the middleware's).
IMAGE_CACHING = {"cache-control": "private, max-age=600"}
#: The library's errors and the status that answers each (the first match in the error's
#: class hierarchy): what a request cannot change, named in ``detail``.
ERROR_STATUS = {UnknownImage: 404, NothingToExport: 404, LabelConflict: 409, ValueError: 422}
#: The download links: file name -> (export, labels format).
EXPORT_FILES = {"labels.csv": ("labels", "csv"), "labels.json": ("labels", "json"),
                "predictions.csv": ("predictions", None), "model.pkl": ("model", None),
                "label-studio.json": ("label-studio", None),
                "label-studio-config.xml": ("label-studio-config", None)}


class LabelRequest(BaseModel):
    """``POST /api/label``: a decision on one image of the open batch."""

    model_config = ConfigDict(extra="forbid")
    batch_id: Id
    image_id: Id
    kind: Literal["class", "ood", "skip"]
    label: Optional[StrictStr] = None
    #: The image's latest decision in the batch as the page showed it (``event_id``, 0: none):
    #: another window's decision since then makes this one a 409 (optimistic concurrency).
    seen_event: Optional[Id] = None


class EditRequest(BaseModel):
    """``POST /api/images/{id}/label``: a decision made on the review page."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["class", "ood", "skip", "unlabel"]
    label: Optional[StrictStr] = None
    #: The id of the image's latest event the editor showed (0: none); see LabelRequest.
    seen_event: Optional[Id] = None


def _assets() -> dict:
    """The app's pages and assets, by file name, read once from the package."""
    folder = importlib.resources.files(__package__) / "static"
    assets = {}
    for entry in folder.iterdir():
        if entry.is_file():
            media = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
            assets[entry.name] = (entry.read_bytes(), media)
    return assets


@functools.lru_cache(maxsize=1024)
def _thumbnail(path: str, identity: tuple, size: int) -> bytes:
    with Image.open(path) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much faster
        # Upright as the browser shows the full-size file (and as the model sees it).
        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((size, size))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=88)
    return out.getvalue()


class LabelApp:
    """What every route reads (the arguments of :func:`create_app`, the pages) and the
    answers that several routes share; the routes get it through ``Depends``."""

    def __init__(self, project, store, worker, token=None):
        self.project, self.store, self.worker = project, store, worker
        self.session = worker.session
        self.settings = project.settings
        self.classes = list(project.settings.classes)
        self.assets = _assets()
        self.token_query = "" if token is None else f"?token={token}"

    def page(self, name) -> Response:
        """A page or asset; links in pages carry the token."""
        content, media = self.assets[name]
        if name.endswith(".html"):
            content = content.replace(b"__TOKEN_QUERY__", self.token_query.encode())
        return Response(content, media_type=media)

    def trust(self) -> dict:
        """The header's numbers, as in the runner's rounds.json (modal_vlm.labeling.trust)."""
        found = self.session.assessment()
        estimate = found[0].estimate if found else None
        stability = self.session.trust.stability()
        return {"estimate": None if estimate is None else estimate.as_dict(),
                "stable": bool(stability and stability["stable"]), "stability": stability}

    def suspects(self) -> list:
        """Labels the models put in another class: before they were learned, now, zero-shot (assess)."""
        found = self.session.assessment()
        if found is None:
            return []
        assessment, pairs, image_ids = found
        rows = {row["image_id"]: row for row in self.store.labels(("class",))}
        return [{**rows[image_id], "suspicion": round(float(assessment.suspicion[k]), 4),
                 "suggestion": self.classes[int(pairs.proba[k].argmax())]}
                for k in assessment.suspects for image_id in [int(image_ids[k])] if image_id in rows]

    def state(self) -> dict:
        """``GET /api/state``: everything the label page shows."""
        info, settings, store = self.session.model_info, self.settings, self.store
        return {**self.trust(),
            "project": self.project.root.name, "classes": self.classes, "ood_choice": OOD_CHOICE,
            "settings": {"model": settings.model, "strategy": settings.strategy,
                         "batch_size": settings.images_per_batch, "fit_mode": settings.fit_mode},
            "batch": store.batch(), "counts": store.counts(self.classes),
            "batches": [b for b in store.batches() if b["finished_at"] is not None],
            "worker": self.worker.status(),
            "model": None if info is None else {k: info[k] for k in ("round", "n_labels", "n_ood", "seconds")},
        }

    def image_answer(self, image_id) -> dict:
        """An image and its label history (the review page's editor)."""
        return {"image": self.store.image(image_id), "events": self.store.history(image_id)}


def _label_app(request: Request) -> LabelApp:
    return request.app.state.label_app


def _require_json(request: Request) -> None:
    """A ``POST`` takes JSON only: a form on another site cannot post here without a CORS
    preflight, which is never granted."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise HTTPException(415, "send JSON (Content-Type: application/json)")


App = Annotated[LabelApp, Depends(_label_app)]
ImageId = Annotated[int, Path(ge=0, le=MAX_ID)]
router = APIRouter()
posts_json = APIRouter(dependencies=[Depends(_require_json)])


@router.get("/")
def label_page(app: App):
    return app.page("index.html")


@router.get("/review")
def review_page(app: App):
    return app.page("review.html")


@router.get("/static/{name}")
def static(app: App, name: str):
    if name not in app.assets:
        raise HTTPException(404, "no such asset")
    return app.page(name)


@router.get("/api/state")
def get_state(app: App):
    return app.state()


@posts_json.post("/api/label")
def post_label(app: App, decision: LabelRequest):
    finished = app.store.record(decision.image_id, Decision(decision.kind, decision.label), app.classes,
                                batch_id=decision.batch_id, source="batch", seen_event=decision.seen_event)
    if finished:
        app.worker.wake()
    return app.state()


@router.get("/api/review")
def review(app: App, which: str = Query("labeled", alias="filter", max_length=200)):
    kinds = {"labeled": ("class", "ood"), "ood": ("ood",), "skip": ("skip",)}
    if which == "suspect":
        return {"items": app.suspects()}
    if which == "unreadable":
        return {"items": [{"image_id": row["id"], "path": row["path"], "status": row["status"],
                           "reason": row["reason"], "kind": None, "label": None}
                          for row in app.store.images() if row["status"] != "ok"]}
    if which in kinds:
        rows = app.store.labels(kinds[which])
    elif which in app.classes:
        rows = [row for row in app.store.labels(("class",)) if row["label"] == which]
    else:
        raise HTTPException(422, f"unknown filter {which!r}; use labeled, suspect, ood, skip, "
                                 f"unreadable or a class name")
    return {"items": rows}


@router.get("/api/images/{image_id}/history")
def history(app: App, image_id: ImageId):
    return app.image_answer(image_id)


@posts_json.post("/api/images/{image_id}/label")
def edit(app: App, decision: EditRequest, image_id: ImageId):
    app.store.record(image_id, Decision(decision.kind, decision.label), app.classes, source="review",
                     seen_event=decision.seen_event)
    app.worker.wake()
    return app.image_answer(image_id)


@posts_json.post("/api/retry")
def retry(app: App):
    app.worker.wake()
    return app.worker.status()


@router.get("/images/{image_id}")
def image(app: App, image_id: ImageId, size: Optional[int] = Query(None, ge=MIN_SIZE, le=MAX_SIZE)):
    row = app.store.image(image_id)
    if row["status"] == "unreadable":
        raise HTTPException(410, f"unreadable image: {row['reason']}")
    target = resolve_inside(app.settings.images_dir, row["path"])
    if target is None:
        raise HTTPException(404, f"{row['path']} is not a file inside the image folder")
    if size is None:
        return FileResponse(target, media_type=mimetypes.guess_type(target.name)[0],
                            headers=IMAGE_CACHING)
    try:
        stat = target.stat()
        identity = (stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)
        return Response(_thumbnail(str(target), identity, size), media_type="image/jpeg", headers=IMAGE_CACHING)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        app.store.mark_unreadable(image_id, f"cannot read image: {exc}")
        raise HTTPException(410, f"unreadable image: {exc}") from None


@router.get("/export/{filename}")
def export(app: App, filename: str, batch: Optional[int] = Query(None, ge=1, le=MAX_ID)):
    """A download (:func:`~modal_vlm.labeling.exports.render`); ``batch``: the Label Studio
    tasks of that batch (default: the open one)."""
    if filename not in EXPORT_FILES:
        raise HTTPException(404, "no such export")
    what, format = EXPORT_FILES[filename]
    rendered = render(what, app.project, app.store, format=format, session=app.session, batch=batch)
    return Response(rendered.content, media_type=rendered.media_type,
                    headers={"content-disposition": f'attachment; filename="{rendered.filename}"'})


@posts_json.post(IMPORT_PATH)
def import_tasks(app: App, tasks: list = Body(...), skip_unknown: bool = False):
    summary = import_label_studio(app.store, app.classes, tasks, skip_unknown)
    app.worker.wake()
    return summary


def _answer_with(status):
    async def answer(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=status)
    return answer


def create_app(project, store, worker, token=None, loopback_only=True):
    """The ASGI app of a project: :data:`router`'s routes behind the middlewares of
    :mod:`~modal_vlm.labeling._middleware`.

    Parameters
    ----------
    project : Project
        The project (settings, paths).
    store : LabelStore
        Its label store.
    worker : BackgroundWorker
        Its background worker (woken when a batch finishes or a label is edited).
    token : str, optional
        Required on every request when set.
    loopback_only : bool, default=True
        Answer only requests addressed to a loopback host name.

    Returns
    -------
    ASGI app
        The app, ready for uvicorn or a test client.
    """
    app = FastAPI(title="modal-vlm label", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.label_app = LabelApp(project, store, worker, token)
    app.include_router(router)
    app.include_router(posts_json)
    for error, status in ERROR_STATUS.items():
        app.add_exception_handler(error, _answer_with(status))
    return guard(app, token=token, loopback_only=loopback_only, max_body=MAX_BODY,
                 path_limits={IMPORT_PATH: MAX_IMPORT_BODY})


def serve(project, host="127.0.0.1", port=8765, *, announce=print):
    """Run the app until interrupted: the worker in the background, uvicorn in front.

    Parameters
    ----------
    project : Project
        The project to serve.
    host : str, default="127.0.0.1"
        Address to bind. Any non-loopback address requires a token, generated here.
    port : int, default=8765
        TCP port; 0 picks a free one.
    announce : callable, default=print
        Receives the line with the URL (the token included) once the socket is bound.
    """
    import uvicorn

    from .store import LabelStore
    from .worker import BackgroundWorker

    lock = _lock_project(project)
    local = is_loopback(host)
    token = None if local else secrets.token_urlsafe(24)
    sock = _listen(host, port, lock)
    port = sock.getsockname()[1]
    store = LabelStore(project.database)
    worker = BackgroundWorker(project, store).start()
    app = create_app(project, store, worker, token=token, loopback_only=local)
    shown = host if local else socket.gethostname()
    shown = f"[{shown}]" if ":" in shown else shown
    url = f"http://{shown}:{port}/" + ("" if token is None else f"?token={token}")
    announce(url)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    try:
        server.run(sockets=[sock])
    finally:
        worker.stop(timeout=1.0)
        store.close()
        lock.close()


def _listen(host, port, lock):
    """A socket listening on ``host:port``; from then on connections wait in its backlog until
    uvicorn runs. When it cannot be bound, the project's ``lock`` is released and the error
    names the address."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        lock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another --port)") from None
    return sock


def _lock_project(project):
    """Hold the project's ``server.lock`` while serving: two servers on one project would each
    choose batches. Released by the system when the process ends, however it ends."""
    file = open(project.root / "server.lock", "a+")
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        return file
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        file.close()
        raise OSError(f"another modal-vlm label server is running on {project.root}") from None
    return file


__all__ = ["create_app", "router", "serve"]
