"""The step-confidence inspector: a local web page to ask a trained model about an image and read
its chain with the expressed and internal confidence of every step, and a browser for a run's
evaluation results.

    mmboundary serve --model runs/default            # http://127.0.0.1:8000/

Modules: `app` (the FastAPI app: routes, upload limits, one-at-a-time inference with a bounded
queue, security headers), `uploads` (checks on the uploaded image and the question), `results`
(the run's `evaluate/` output for the browser), `server` (loading the model and running uvicorn).
The page itself is plain HTML/CSS/JS in `static/` (no external assets). Guide: docs/inspector.md.
"""

from mmboundary.serve.app import LEVEL_COLOURS, ServeSettings, create_app, is_loopback

__all__ = ["LEVEL_COLOURS", "ServeSettings", "create_app", "is_loopback"]
