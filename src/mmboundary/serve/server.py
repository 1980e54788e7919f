"""Run the inspector: load a model, build the app, serve it with uvicorn (one process, one event
loop; inference in a worker thread, one request at a time). `mmboundary serve` calls `serve`.

    mmboundary serve --model runs/default --port 8000
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import transformers
import uvicorn

from mmboundary.api import load
from mmboundary.serve.app import ServeSettings, create_app, is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def serve(model_path: str | Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          max_upload_mb: float = 8.0, max_queue: int = 8, stage: str | None = None, device: str | None = None,
          log_level: str = "info") -> None:
    """Load `model_path` (`api.load`: a run directory or a checkpoint) and serve the inspector on
    `host`:`port` until interrupted. A host that is not a loopback address is served as asked,
    with a warning on stderr: the page has no authentication."""
    # no progress bars per request (they would interleave with the access log); MMBOUNDARY_PROGRESS=1 keeps them
    os.environ.setdefault("MMBOUNDARY_PROGRESS", "0")
    if os.environ["MMBOUNDARY_PROGRESS"] == "0":
        transformers.utils.logging.disable_progress_bar()
    settings = ServeSettings(max_upload_mb=max_upload_mb, max_queue=max_queue, loopback=is_loopback(host))
    if not settings.loopback:
        print(f"warning: serving on {host}, not a loopback address: anyone who can reach this machine "
              "can use the model (there is no authentication)", file=sys.stderr)
    model = load(model_path, stage=stage, device=device)
    app = create_app(model, settings=settings)
    shown = f"[{host}]" if ":" in host else host
    print(f"mmboundary inspector: model {model.name} ({model.path}) at http://{shown}:{port}/", file=sys.stderr,
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1, server_header=False)
