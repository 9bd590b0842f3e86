"""The few calls of Label Studio's REST API that the ML backend makes, over httpx.

The backend reads the project's tasks, fetches task images that are not on its disk, and
pushes its predictions (class, confidence, priority) to every task so that sorting the
Data Manager by prediction score follows the strategy's order. Label Studio's own SDK
(``label-studio-sdk``) would do the same, but it pins ``numpy<2.3``, which conflicts with
this project's stack; these five endpoints are small and stable:

* ``GET  /api/tasks/?project=ID&page=N&page_size=M``: the tasks, page by page;
* ``POST /api/projects/ID/import/predictions``: predictions of many tasks in one request;
* ``PATCH /api/projects/ID`` ``{"model_version": V}``: which predictions the Data Manager's
  "prediction score" averages (Label Studio filters the scores by the project's model
  version);
* ``DELETE /api/projects/ID/model-versions/`` ``{"model_version": V}``: a superseded
  version's predictions (slow in Label Studio: the backend calls it when labeling pauses);
* ``GET /data/...``: a task's file (local storage or upload), with the API key.

Authentication takes either kind of key Label Studio hands out: a *personal access token*
(a JWT refresh token, the default since Label Studio 1.15, exchanged at
``/api/token/refresh/`` for short-lived access tokens, sent as ``Bearer``) or a legacy
token (sent as ``Token``; organisations must enable legacy tokens for it to work).
"""
from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse

from ..exceptions import LabelStudioError

#: A file fetched from Label Studio may not be larger than this.
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Tasks per page when listing a project.
PAGE_SIZE = 1000
#: Refresh an access token this many seconds before it expires.
EXPIRY_MARGIN = 30.0


def _jwt_payload(token: str):
    """The payload of a JWT (not verified: only to tell a personal access token from a
    legacy one and to know when an access token expires), or None for another string."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def is_personal_access_token(key: str) -> bool:
    """Whether ``key`` is a personal access token (a JWT refresh token), not a legacy token.

    Parameters
    ----------
    key : str
        A Label Studio API key.

    Returns
    -------
    bool
        True for a JWT whose ``token_type`` is ``refresh``.

    Examples
    --------
    >>> is_personal_access_token("0123456789abcdef0123456789abcdef01234567")
    False
    """
    payload = _jwt_payload(key)
    return payload is not None and payload.get("token_type") == "refresh"


class LabelStudioClient:
    """Label Studio's REST API, as the ML backend needs it (see the module docstring).

    Thread-safe: the worker thread and the request handlers share one client.

    Parameters
    ----------
    url : str
        Label Studio's address, e.g. ``http://localhost:8080``.
    api_key : str
        A personal access token or a legacy token (Account & Settings in Label Studio).
    timeout : float, default=60
        Seconds per request.
    transport : httpx.BaseTransport, optional
        For tests (``httpx.MockTransport``).
    """

    def __init__(self, url: str, api_key: str, timeout: float = 60.0, transport=None):
        import httpx

        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"the Label Studio URL must be http(s)://host[:port], got {url!r}")
        if not api_key or not api_key.strip():
            raise ValueError("a Label Studio API key is required (Account & Settings > Personal Access Token)")
        self.url = f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}"
        self.origin = (parsed.scheme, parsed.netloc.lower())
        self.api_key = api_key.strip()
        self.personal = is_personal_access_token(self.api_key)
        self._access, self._expires = None, 0.0
        self._lock = threading.Lock()
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport,
                                  follow_redirects=False)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- authentication -------------------------------------------------------------------

    def _authorization(self, renew=False) -> str:
        if not self.personal:
            return f"Token {self.api_key}"
        with self._lock:
            if renew or self._access is None or time.time() > self._expires - EXPIRY_MARGIN:
                response = self._send("POST", "/api/token/refresh/", json={"refresh": self.api_key})
                if response.status_code != 200:
                    raise LabelStudioError(f"Label Studio refused the personal access token "
                                           f"({response.status_code}): {_detail(response)}")
                self._access = response.json()["access"]
                payload = _jwt_payload(self._access) or {}
                self._expires = float(payload.get("exp", time.time() + 60))
            return f"Bearer {self._access}"

    def _send(self, method, path, **kwargs):
        import httpx

        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise LabelStudioError(f"cannot reach Label Studio at {self.url}: {exc}") from None

    def request(self, method: str, path: str, **kwargs):
        """One authenticated request; a personal access token is renewed once on a 401.

        Parameters
        ----------
        method : str
            HTTP method.
        path : str
            Path below the Label Studio URL, starting with ``/``.
        **kwargs
            Passed to ``httpx.Client.request`` (``json``, ``params``...).

        Returns
        -------
        httpx.Response
            A 2xx response.

        Raises
        ------
        LabelStudioError
            Not reachable, or an answer other than 2xx (its status and detail in the message).
        """
        for attempt in (0, 1):
            headers = {"Authorization": self._authorization(renew=attempt == 1)}
            response = self._send(method, path, headers=headers, **kwargs)
            if response.status_code != 401 or not self.personal:
                break
        if not 200 <= response.status_code < 300:
            raise LabelStudioError(f"Label Studio answered {response.status_code} to {method} {path}: "
                                   f"{_detail(response)}")
        return response

    # -- the calls ------------------------------------------------------------------------

    def tasks(self, project_id: int) -> list[dict]:
        """Every task of a project: ``id``, ``data``, ``is_labeled``... in id order.

        Parameters
        ----------
        project_id : int
            The Label Studio project.

        Returns
        -------
        list of dict
            The tasks as ``/api/tasks/`` lists them.
        """
        tasks, page = [], 1
        while True:
            body = self.request("GET", "/api/tasks/", params={"project": int(project_id), "page": page,
                                                               "page_size": PAGE_SIZE}).json()
            chunk = body.get("tasks", []) if isinstance(body, dict) else body
            tasks.extend(chunk)
            total = body.get("total", len(tasks)) if isinstance(body, dict) else len(tasks)
            if not chunk or len(tasks) >= total:
                return tasks
            page += 1

    def import_predictions(self, project_id: int, predictions: list[dict]) -> int:
        """Create predictions of many tasks in one request.

        Parameters
        ----------
        project_id : int
            The project.
        predictions : list of dict
            ``task``, ``result``, ``score`` and ``model_version`` each.

        Returns
        -------
        int
            Predictions created.
        """
        if not predictions:
            return 0
        body = self.request("POST", f"/api/projects/{int(project_id)}/import/predictions",
                            json=predictions).json()
        return int(body.get("created", len(predictions)))

    def set_model_version(self, project_id: int, version: str) -> None:
        """Make ``version`` the project's model version: the Data Manager's prediction score
        (and what it sorts by) averages the predictions of this version only.

        Parameters
        ----------
        project_id : int
            The project.
        version : str
            A model version that has predictions in the project.
        """
        self.request("PATCH", f"/api/projects/{int(project_id)}", json={"model_version": version})

    def delete_model_version(self, project_id: int, version: str) -> int:
        """Delete every prediction of one model version.

        Parameters
        ----------
        project_id : int
            The project.
        version : str
            The model version.

        Returns
        -------
        int
            Predictions deleted.
        """
        body = self.request("DELETE", f"/api/projects/{int(project_id)}/model-versions/",
                            json={"model_version": version}).json()
        return int(body.get("deleted_predictions", 0)) if isinstance(body, dict) else 0

    def same_origin(self, url: str) -> bool:
        """Whether an absolute URL points at this Label Studio (scheme, host and port).

        Parameters
        ----------
        url : str
            An absolute URL.

        Returns
        -------
        bool
            True when files may be fetched from it with the API key.
        """
        parsed = urllib.parse.urlsplit(url)
        return (parsed.scheme, parsed.netloc.lower()) == self.origin

    def download(self, path: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
        """A file that Label Studio serves under ``/data/`` (local storage, uploads).

        Parameters
        ----------
        path : str
            The path and query, starting with ``/data/``.
        max_bytes : int, default=MAX_FILE_BYTES
            Larger files are refused.

        Returns
        -------
        bytes
            The file.

        Raises
        ------
        ValueError
            ``path`` is not a ``/data/`` path.
        LabelStudioError
            Refused, unreachable, or over ``max_bytes``.
        """
        if not path.startswith("/data/"):
            raise ValueError(f"only Label Studio's /data/ files are fetched, not {path!r}")
        headers = {"Authorization": self._authorization()}
        try:
            with self._http.stream("GET", path, headers=headers) as response:
                if response.status_code != 200:
                    response.read()
                    raise LabelStudioError(f"Label Studio answered {response.status_code} for {path}: "
                                           f"{_detail(response)}")
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise LabelStudioError(f"{path} is over {max_bytes} bytes; not fetched")
                    chunks.append(chunk)
        except LabelStudioError:
            raise
        except Exception as exc:  # noqa: BLE001 - httpx's errors, named in the message
            raise LabelStudioError(f"cannot fetch {path} from {self.url}: {exc}") from None
        return b"".join(chunks)


def _detail(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("validation_errors") or body)[:300]
    return str(body)[:300]


__all__ = ["LabelStudioClient", "LabelStudioError", "is_personal_access_token"]
