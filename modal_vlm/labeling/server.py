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
import hmac
import importlib.resources
import io
import ipaddress
import json
import mimetypes
import secrets
import socket
from typing import Annotated, Literal, Optional
from urllib.parse import parse_qs

from fastapi import Body, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from .exports import labels_csv, labels_json, predictions_csv
from .labelstudio import OOD_CHOICE, import_label_studio, label_studio_config, label_studio_tasks
from .scan import resolve_inside
from .store import Decision, LabelConflict, UnknownImage

#: Request bodies above this many bytes are refused (413), except on the import endpoint.
MAX_BODY = 64 * 1024
#: The Label Studio import takes files up to this size.
MAX_IMPORT_BODY = 32 * 1024 * 1024
IMPORT_PATH = "/api/import/label-studio"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: Thumbnail sizes the pages ask for (any size in this range is accepted).
MIN_SIZE, MAX_SIZE = 16, 2048
#: Ids are SQLite integers: anything larger is refused (422), never passed to the database.
MAX_ID = 2 ** 63 - 1
#: An id in a URL or a body: a non-negative SQLite integer.
Id = Annotated[StrictInt, Field(ge=0, le=MAX_ID)]
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-resource-policy", b"same-origin"),   # no other site may embed the images
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),   # the token must not leak through Referer
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
     b"frame-ancestors 'none'"),
]
#: Pages and API answers change all the time; images (by id) do not.
NO_STORE = (b"cache-control", b"no-store")
IMAGE_CACHING = {"cache-control": "private, max-age=600"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost).

    Parameters
    ----------
    host : str
        A host name or address, as given to ``--host``.

    Returns
    -------
    bool
        True for loopback addresses and ``localhost``.

    Examples
    --------
    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host.strip("[]").lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware in front of every route: host check, token check, body limit, headers.

    The request body is read here, up to the limit, before the app sees it: an oversized
    body is refused without being parsed.

    Parameters
    ----------
    app : ASGI app
        The FastAPI app.
    token : str, optional
        Required as ``?token=`` (or the ``X-Token`` header) on every request when set.
    loopback_only : bool
        Refuse requests whose ``Host`` header is not a loopback name.
    max_body : int, optional
        Body limit of every path; default: ``MAX_BODY``, ``MAX_IMPORT_BODY`` on the import.
    """

    def __init__(self, app, token=None, loopback_only=True, max_body=None):
        self.app, self.token, self.loopback_only, self.max_body = app, token, loopback_only, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {key.lower(): value.decode("latin-1") for key, value in scope["headers"]}
        if self.loopback_only and not is_loopback(_host_name(headers.get(b"host", ""))):
            return await _refuse(send, 421, "this server answers requests for 127.0.0.1 / localhost only")
        if self.token is not None:
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
            given = given or headers.get(b"x-token", "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return await _refuse(send, 403, "a valid token is required: open the URL the server printed")
        limit = self.max_body or (MAX_IMPORT_BODY if scope["path"] == IMPORT_PATH else MAX_BODY)
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _refuse(send, 413, f"request body over {limit} bytes")
        body, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body.append(message.get("body", b""))
            more = message.get("more_body", False)
            if sum(map(len, body)) > limit:
                return await _refuse(send, 413, f"request body over {limit} bytes")
        body = b"".join(body)
        is_json = headers.get(b"content-type", "").lower().startswith("application/json")
        constant = _json_constant(body) if is_json else None
        if constant is not None:
            return await _refuse(send, 400, f"the request body holds {constant}: NaN and infinities are "
                                            "not JSON numbers")
        replay = [{"type": "http.request", "body": body, "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + SECURITY_HEADERS
                if not any(key.lower() == b"cache-control" for key, _ in headers):
                    headers.append(NO_STORE)
                message["headers"] = headers
            await send(message)

        await self.app(scope, replayed, with_headers)


class _Constant(ValueError):
    pass


def _refuse_constant(name):
    raise _Constant(name)


def _json_constant(body: bytes) -> str | None:
    """``NaN``, ``Infinity`` or ``-Infinity`` if the JSON ``body`` holds one (Python's parser
    accepts them, and an answer that repeats them cannot be encoded); else None."""
    if not any(word in body for word in (b"NaN", b"Infinity")):
        return None
    try:
        json.loads(body, parse_constant=_refuse_constant)
    except _Constant as exc:
        return str(exc)
    except ValueError:  # malformed JSON: the app answers 422
        return None
    return None


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _refuse(send, status, detail):
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), NO_STORE] + SECURITY_HEADERS})
    await send({"type": "http.response.body", "body": body})


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


def _download(content, filename, media_type) -> Response:
    return Response(content, media_type=media_type,
                    headers={"content-disposition": f'attachment; filename="{filename}"'})


def create_app(project, store, worker, token=None, loopback_only=True):
    """The ASGI app of a project (wrapped in :class:`Guard`).

    Parameters
    ----------
    project : Project
        The project (settings, paths).
    store : LabelStore
        Its label store.
    worker : LabelingWorker
        Its background worker (woken when a batch finishes or a label is edited).
    token : str, optional
        Required on every request when set.
    loopback_only : bool, default=True
        Answer only requests addressed to a loopback host name.

    Returns
    -------
    Guard
        The app, ready for uvicorn or a test client.
    """
    settings = project.settings
    classes = list(settings.classes)
    assets = _assets()
    app = FastAPI(title="modal-vlm label", docs_url=None, redoc_url=None, openapi_url=None)

    token_query = "" if token is None else f"?token={token}"

    def page(name):
        content, media = assets[name]
        if name.endswith(".html"):  # links to assets and pages carry the token
            content = content.replace(b"__TOKEN_QUERY__", token_query.encode())
        return Response(content, media_type=media)

    def json_body(request: Request):
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise HTTPException(415, "send JSON (Content-Type: application/json)")

    def trust() -> dict:
        """The header's numbers, as in the runner's rounds.json (modal_vlm.labeling.trust)."""
        found = worker.assessment()
        estimate = found[0].estimate if found else None
        stability = worker.trust.stability()
        return {"estimate": None if estimate is None else estimate.as_dict(),
                "stable": bool(stability and stability["stable"]), "stability": stability}

    def suspects() -> list:
        """Labels the model, before it learned them, confidently put in another class."""
        found = worker.assessment()
        if found is None:
            return []
        assessment, pairs, image_ids = found
        rows = {row["image_id"]: row for row in store.labels(("class",))}
        return [{**rows[image_id], "suspicion": round(float(assessment.suspicion[k]), 4),
                 "suggestion": classes[int(pairs.proba[k].argmax())]}
                for k in assessment.suspects for image_id in [int(image_ids[k])] if image_id in rows]

    def state() -> dict:
        info = worker.model_info
        return {**trust(),
            "project": project.root.name, "classes": classes, "ood_choice": OOD_CHOICE,
            "settings": {"model": settings.model, "strategy": settings.strategy,
                         "batch_size": settings.images_per_batch, "fit_mode": settings.fit_mode},
            "batch": store.batch(), "counts": store.counts(classes),
            "batches": [b for b in store.batches() if b["finished_at"] is not None],
            "worker": worker.status(),
            "model": None if info is None else {k: info[k] for k in ("round", "n_labels", "n_ood", "seconds")},
        }

    @app.exception_handler(UnknownImage)
    async def unknown_image(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(LabelConflict)
    async def conflict(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.get("/")
    def label_page():
        return page("index.html")

    @app.get("/review")
    def review_page():
        return page("review.html")

    @app.get("/static/{name}")
    def static(name: str):
        if name not in assets:
            raise HTTPException(404, "no such asset")
        return page(name)

    @app.get("/api/state")
    def get_state():
        return state()

    @app.post("/api/label")
    def post_label(request: Request, decision: LabelRequest):
        json_body(request)
        try:
            finished = store.record(decision.image_id, Decision(decision.kind, decision.label), classes,
                                    batch_id=decision.batch_id, source="batch", seen_event=decision.seen_event)
        except (UnknownImage, LabelConflict):
            raise
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        if finished:
            worker.wake()
        return state()

    @app.get("/api/review")
    def review(which: str = Query("labeled", alias="filter", max_length=200)):
        kinds = {"labeled": ("class", "ood"), "ood": ("ood",), "skip": ("skip",)}
        if which == "suspect":
            return {"items": suspects()}
        if which == "unreadable":
            return {"items": [{"image_id": row["id"], "path": row["path"], "status": row["status"],
                               "reason": row["reason"], "kind": None, "label": None}
                              for row in store.images() if row["status"] != "ok"]}
        if which in kinds:
            rows = store.labels(kinds[which])
        elif which in classes:
            rows = [row for row in store.labels(("class",)) if row["label"] == which]
        else:
            raise HTTPException(422, f"unknown filter {which!r}; use labeled, suspect, ood, skip, "
                                     f"unreadable or a class name")
        return {"items": rows}

    @app.get("/api/images/{image_id}/history")
    def history(image_id: int = Path(ge=0, le=MAX_ID)):
        return {"image": store.image(image_id), "events": store.history(image_id)}

    @app.post("/api/images/{image_id}/label")
    def edit(request: Request, decision: EditRequest, image_id: int = Path(ge=0, le=MAX_ID)):
        json_body(request)
        try:
            store.record(image_id, Decision(decision.kind, decision.label), classes, source="review",
                         seen_event=decision.seen_event)
        except (UnknownImage, LabelConflict):
            raise
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        worker.wake()
        return {"image": store.image(image_id), "events": store.history(image_id)}

    @app.post("/api/retry")
    def retry(request: Request):
        json_body(request)
        worker.wake()
        return worker.status()

    @app.get("/images/{image_id}")
    def image(image_id: int = Path(ge=0, le=MAX_ID), size: Optional[int] = Query(None, ge=MIN_SIZE, le=MAX_SIZE)):
        row = store.image(image_id)
        if row["status"] == "unreadable":
            raise HTTPException(410, f"unreadable image: {row['reason']}")
        target = resolve_inside(settings.images_dir, row["path"])
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
            store.mark_unreadable(image_id, f"cannot read image: {exc}")
            raise HTTPException(410, f"unreadable image: {exc}") from None

    @app.get("/export/labels.csv")
    def export_labels_csv():
        return _download(labels_csv(store), "labels.csv", "text/csv")

    @app.get("/export/labels.json")
    def export_labels_json():
        return _download(json.dumps(labels_json(store, settings), indent=1), "labels.json", "application/json")

    @app.get("/export/predictions.csv")
    def export_predictions():
        images, proba = worker.predict()
        return _download(predictions_csv(store, settings, images, proba, worker.model_info),
                         "predictions.csv", "text/csv")

    @app.get("/export/model.pkl")
    def export_model():
        if not project.model_file.is_file():
            raise HTTPException(404, "no trained model yet: it is saved after the first batch")
        return FileResponse(project.model_file, filename="model.pkl", media_type="application/octet-stream")

    @app.get("/export/label-studio.json")
    def export_label_studio(batch: Optional[int] = Query(None, ge=1, le=MAX_ID)):
        chosen = store.batch(batch)
        if chosen is None:
            raise HTTPException(404, "no open batch" if batch is None else f"no batch with id {batch}")
        tasks = label_studio_tasks(chosen, f"modal-vlm round {chosen['model_round']}")
        return _download(json.dumps(tasks, indent=1), f"label-studio-batch-{chosen['id']}.json",
                         "application/json")

    @app.get("/export/label-studio-config.xml")
    def export_label_studio_config():
        return _download(label_studio_config(classes), "label-studio-config.xml", "application/xml")

    @app.post(IMPORT_PATH)
    def import_tasks(request: Request, tasks: list = Body(...), skip_unknown: bool = False):
        json_body(request)
        try:
            summary = import_label_studio(store, classes, tasks, skip_unknown)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        worker.wake()
        return summary

    return Guard(app, token=token, loopback_only=loopback_only)


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
    from .worker import LabelingWorker

    lock = _lock_project(project)
    local = is_loopback(host)
    token = None if local else secrets.token_urlsafe(24)
    sock = _listen(host, port, lock)
    port = sock.getsockname()[1]
    store = LabelStore(project.database)
    worker = LabelingWorker(project, store).start()
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


__all__ = ["Guard", "create_app", "is_loopback", "serve"]
