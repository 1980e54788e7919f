"""The inspector's HTTP app (FastAPI): the ask page, its JSON API, the results browser, `/healthz`.

    from mmboundary.api import load
    from mmboundary.serve.app import ServeSettings, create_app

    app = create_app(load("runs/default"), settings=ServeSettings(max_upload_mb=8, max_queue=8))
    # uvicorn.run(app, host="127.0.0.1", port=8000)   -- or: mmboundary serve --model runs/default

Routes:
- `GET /`: the ask page (upload an image, ask a question, read the chain coloured by level);
- `POST /api/ask`: multipart form `image` (file), `question`, `choice` (repeatable, optional),
  `self_correct` (optional, "1"/"true"/"on") -> the `api.Answer` as JSON;
- `GET /results`: the results browser; its data: `GET /api/results`, `GET /api/results/examples`
  (`split`, `model`, `level`, `limit`, `offset`), `GET /api/results/figure/<name>.png`,
  `GET /api/results/image` (`split`, `id`: a known example's image only);
- `GET /api/info`: the model and the limits; `GET /healthz`: liveness and queue state;
- `GET /levels.css`: the level colours (`LEVEL_COLOURS`), `/static/*`: the page's own CSS and JS.

Limits (see docs/inspector.md):
- the request body of `/api/ask` is at most `max_upload_mb` MiB + 64 KiB (the form's text
  fields): a larger Content-Length is refused before reading, a body that grows past it while
  being read is cut off; both are a 413 `{"error": "too_large"}`;
- the image is checked by `serve.uploads.check_image_file` (4xx `{"error": "bad_image"}`);
- inference runs one request at a time (the model is not thread-safe: a lock, taken in a worker
  thread); at most `max_queue` more requests wait for it. A request beyond that is answered at
  once, before its body is read, with 503 `{"error": "busy"}` and `Retry-After`. The uploads
  held at any time are thus at most (1 + max_queue) x the size limit, spooled to disk by the form
  parser above 1 MiB, and deleted when the request ends.
- Host header check: when bound to a loopback address only `127.0.0.1`, `localhost`, `[::1]`
  (and `testserver`, the test client's) are accepted as Host, which stops DNS-rebinding pages
  from reading the API; every response carries a strict Content-Security-Policy (scripts and
  styles from the app only) and `X-Content-Type-Options: nosniff`. All text is put into the page
  with `textContent`, never as HTML.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from mmboundary.errors import MMBoundaryError
from mmboundary.serve.results import Results
from mmboundary.serve.uploads import IMAGE_FORMATS, UploadProblem, check_choices, check_image_file, check_question

log = logging.getLogger("mmboundary.serve")

STATIC = Path(__file__).parent / "static"

#: The background colour of each level on the page (1 = least confident), the colours of
#: `api.LEVEL_STYLES` (`mmboundary ask`) as CSS: red, orange, yellow, light green, green.
LEVEL_COLOURS = {1: "#d7301f", 2: "#f28c28", 3: "#f5d547", 4: "#8fd14f", 5: "#1a9850"}
#: The colour of a step without a level.
NO_LEVEL_COLOUR = "#d9d9d9"

FORM_SLACK_BYTES = 64 * 1024
"""Bytes allowed on top of the upload limit for the form's text fields and multipart headers."""

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "testserver")


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """The server's limits. `max_upload_mb`: **[choice]** 8 MiB, the largest image file accepted
    (a 4000 x 3000 JPEG is 2-5 MB); `max_queue`: **[choice]** 8 requests waiting for the model
    besides the one it answers; `retry_after_s`: the Retry-After of a busy answer (5 s);
    `loopback`: whether the server is bound to a loopback address (turns on the Host check)."""

    max_upload_mb: float = 8.0
    max_queue: int = 8
    retry_after_s: int = 5
    loopback: bool = True

    def __post_init__(self):
        if not self.max_upload_mb > 0:
            raise ValueError(f"max_upload_mb must be > 0, got {self.max_upload_mb}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or name) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _TooLarge(Exception):
    pass


class _Guard:
    """Pure ASGI middleware: the Host check and the security headers."""

    HEADERS = [
        (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; script-src 'self'; "
                                     b"style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]

    def __init__(self, app, loopback: bool):
        self.app = app
        self.loopback = loopback

    @staticmethod
    def _hostname(value: str) -> str:
        if value.startswith("["):
            return value[1:value.find("]")] if "]" in value else value
        return value.rsplit(":", 1)[0] if value.count(":") == 1 else value

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.loopback:
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if self._hostname(host).lower() not in LOOPBACK_HOSTS:
                resp = JSONResponse({"error": "bad_host", "message": f"Host {host!r} is not served (the server is "
                                     "bound to loopback: use 127.0.0.1 or localhost)"}, status_code=421)
                return await resp(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers") or []) + self.HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Inspector:
    """The state behind the app: the model, its lock, the admission count, the results."""

    def __init__(self, model: Any, settings: ServeSettings, results_root: Path | None):
        self.model = model
        self.settings = settings
        self.results = Results(results_root) if results_root is not None else None
        self._model_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.admitted = 0  # requests inside /api/ask (answered or waiting)
        self.served = 0
        self.rejected_busy = 0

    @property
    def capacity(self) -> int:
        return 1 + self.settings.max_queue

    def admit(self) -> bool:
        with self._count_lock:
            if self.admitted >= self.capacity:
                self.rejected_busy += 1
                return False
            self.admitted += 1
            return True

    def leave(self) -> None:
        with self._count_lock:
            self.admitted -= 1

    def infer(self, image: Path, question: str, choices: list[str] | None, correct: bool):
        """One model call at a time (runs in a worker thread)."""
        with self._model_lock:
            answer = self.model.ask(image, question, choices, correct=correct)
        with self._count_lock:
            self.served += 1
        return answer


def _problem(p: UploadProblem, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(p.payload(), status_code=p.status, headers=headers)


def create_app(model: Any, *, settings: ServeSettings | None = None, results_root: str | Path | None = None
               ) -> FastAPI:
    """The inspector app for a loaded model (`api.LoadedModel`, or anything with its `ask`, `name`,
    `statements`, `internal_available`). `results_root`: the run whose `evaluate/` output the
    results browser shows (default: the model's run, `model.run_root`; None: no browser)."""
    settings = settings or ServeSettings()
    if results_root is None:
        results_root = getattr(model, "run_root", None)
    state = Inspector(model, settings, Path(results_root) if results_root is not None else None)
    app = FastAPI(title="mmboundary inspector", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.inspector = state
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/results", include_in_schema=False)
    def results_page():
        return FileResponse(STATIC / "results.html", media_type="text/html")

    @app.get("/levels.css", include_in_schema=False)
    def levels_css():
        rules = [f".level-{k} {{ background: {c}; }}" for k, c in LEVEL_COLOURS.items()]
        rules.append(f".level-none {{ background: {NO_LEVEL_COLOUR}; }}")
        return PlainTextResponse("\n".join(rules) + "\n", media_type="text/css")

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "model": getattr(model, "name", None), "admitted": state.admitted,
                "capacity": state.capacity, "served": state.served, "rejected_busy": state.rejected_busy}

    @app.get("/api/info")
    def info():
        return {"model": getattr(model, "name", None), "statements": bool(getattr(model, "statements", False)),
                "internal_available": bool(getattr(model, "internal_available", False)),
                "max_upload_mb": settings.max_upload_mb, "max_queue": settings.max_queue,
                "image_formats": list(IMAGE_FORMATS), "results": state.results is not None,
                "level_colours": LEVEL_COLOURS}

    @app.post("/api/ask")
    async def ask(request: Request):
        if not state.admit():
            return _problem(UploadProblem(503, "busy", f"the model is busy ({state.capacity} requests in hand); "
                                          f"retry in {settings.retry_after_s} s"),
                            headers={"Retry-After": str(settings.retry_after_s)})
        tmp = None
        try:
            question, choices, correct, filename, tmp = await _read_form(request, settings)
            image = tmp / "upload"
            await anyio.to_thread.run_sync(check_image_file, image, filename)
            try:
                answer = await anyio.to_thread.run_sync(state.infer, image, question, choices, correct)
            except MMBoundaryError as e:  # e.g. self-correction without internal confidence
                raise UploadProblem(400, "bad_request", str(e).replace(str(image), filename or "upload")) from None
            return JSONResponse(answer.model_dump(mode="json"))
        except UploadProblem as p:
            return _problem(p)
        except Exception:  # noqa: BLE001 - logged; the server keeps serving
            log.exception("ask failed")
            return JSONResponse({"error": "internal", "message": "internal error (see the server log)"},
                                status_code=500)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            state.leave()

    # -- results browser -------------------------------------------------------------------------

    def _results() -> Results:
        if state.results is None:
            raise UploadProblem(404, "no_results", "this model has no run, so no evaluation results")
        return state.results

    def _guarded(fn):
        try:
            return fn()
        except UploadProblem as p:
            return _problem(p)
        except MMBoundaryError as e:
            return JSONResponse({"error": "bad_results", "message": str(e)}, status_code=500)

    @app.get("/api/results")
    def results_summary():
        def go():
            r = _results()
            pairs = sorted(r.chain_files())
            return {"run": str(r.root), "complete": r.complete(), "table": r.table(), "figures": r.figures(),
                    "models": sorted({m for m, _ in pairs}), "splits": sorted({s for _, s in pairs}),
                    "pairs": [list(p) for p in pairs]}

        return _guarded(go)

    @app.get("/api/results/examples")
    def results_examples(split: str, model: str, level: int | None = Query(None, ge=1, le=5),
                         limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)):
        def go():
            try:
                return _results().examples(split, model, level=level, limit=limit, offset=offset)
            except KeyError as e:
                raise UploadProblem(404, "not_found", e.args[0]) from None

        return _guarded(go)

    @app.get("/api/results/figure/{name}")
    def results_figure(name: str):
        def go():
            png = _results().figure(name)
            if png is None:
                raise UploadProblem(404, "not_found", f"no figure {name!r}")
            return Response(png, media_type="image/png")

        return _guarded(go)

    @app.get("/api/results/image")
    def results_image(split: str, id: str):  # noqa: A002 - the query parameter's name
        def go():
            path = _results().image_path(split, id)
            if path is None:
                raise UploadProblem(404, "not_found", f"no image for example {id!r} of split {split!r}")
            return FileResponse(path)

        return _guarded(go)

    app.add_middleware(_Guard, loopback=settings.loopback)
    return app


async def _read_form(request: Request, settings: ServeSettings):
    """The checked fields of an ask form, the upload copied into a new temporary folder:
    (question, choices, self_correct, client file name, folder)."""
    limit = settings.max_upload_bytes + FORM_SLACK_BYTES
    mb = f"{settings.max_upload_mb:g} MiB"
    length = request.headers.get("content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise UploadProblem(400, "bad_request", f"invalid Content-Length {length!r}") from None
        if n > limit:
            raise UploadProblem(413, "too_large", f"the upload is {n / 2**20:.1f} MiB, over the limit of {mb}", "image")
    seen = 0

    async def counting_receive():
        nonlocal seen
        message = await request.receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge()
        return message

    try:
        form = await Request(request.scope, counting_receive).form(max_files=1, max_fields=64)
    except _TooLarge:
        raise UploadProblem(413, "too_large", f"the upload is over the limit of {mb}", "image") from None
    except Exception as e:  # noqa: BLE001 - a malformed multipart body
        raise UploadProblem(400, "bad_request", f"malformed form: {e}") from None
    tmp = None
    try:
        question = form.get("question")
        question = check_question(question if isinstance(question, str) else None)
        choices = check_choices([c for c in form.getlist("choice") if isinstance(c, str)])
        correct = str(form.get("self_correct") or "").lower() in ("1", "true", "on", "yes")
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise UploadProblem(400, "bad_image", "no image file uploaded (form field 'image')", "image")
        if (upload.size or 0) > settings.max_upload_bytes:
            raise UploadProblem(413, "too_large", f"{upload.filename}: {upload.size / 2**20:.1f} MiB, over the "
                                f"limit of {mb}", "image")
        tmp = Path(tempfile.mkdtemp(prefix="mmboundary-serve-"))

        def copy():
            upload.file.seek(0)
            with open(tmp / "upload", "wb") as f:
                shutil.copyfileobj(upload.file, f, 1 << 20)

        await anyio.to_thread.run_sync(copy)
        return question, choices, correct, upload.filename, tmp
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        await form.close()
