"""Checks on what a client sends to `POST /api/ask`: the uploaded image, the question, the choices.

Every problem is an `UploadProblem` with an HTTP status, a short error code and a message naming
the field, which the app answers as JSON `{"error": code, "message": ..., "field": ...}` and the
page shows in its error box. Nothing here raises anything else for bad input.

The image is checked as the dataset loaders check theirs (`data.images`): PIL must identify the
file, `Image.verify()` must pass (for PNG: every chunk's CRC, so a truncated file is caught), the
pixel count must be within `MAX_IMAGE_PIXELS` (40 MP; PIL's decompression-bomb guard turned into
the same error) and a full decode must succeed (`load_image`). On top of that only raster formats
a camera or browser produces are accepted (`IMAGE_FORMATS`): **[choice]** PNG, JPEG, GIF, BMP,
WEBP, TIFF; anything else PIL could open (e.g. EPS, which would run Ghostscript, or ICO, PSD) is
refused as an unsupported format. Messages name the uploaded file by its client-side name, never
the server's temporary path.

**[choice]** Text limits: the question at most `MAX_QUESTION_CHARS` = 1000 characters, at most
`MAX_CHOICES` = 26 choices of at most 200 characters each.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mmboundary.data.images import MAX_IMAGE_PIXELS, image_problem, load_image
from mmboundary.errors import DataError

IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
"""The image formats `POST /api/ask` accepts (PIL's format names)."""

MAX_QUESTION_CHARS = 1000
MAX_CHOICES = 26
MAX_CHOICE_CHARS = 200


class UploadProblem(Exception):
    """A request the server refuses: `status` (4xx or 503), `code` (e.g. "bad_image"), a message
    naming the problem, and the form field it concerns."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def payload(self) -> dict:
        out = {"error": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


def _display_name(filename: str | None) -> str:
    """The client's file name, cut to something printable and short."""
    name = Path(filename or "").name or "upload"
    name = "".join(ch if ch.isprintable() else "?" for ch in name)
    return name if len(name) <= 80 else name[:77] + "..."


def check_image_file(path: Path, filename: str | None) -> None:
    """Raise `UploadProblem` unless the uploaded file at `path` is a usable image (see the module
    docstring). Decodes the whole image once (CPU work: call it off the event loop)."""
    shown = _display_name(filename)
    if path.stat().st_size == 0:
        raise UploadProblem(400, "bad_image", f"{shown}: the uploaded file is empty", "image")
    try:
        with Image.open(path) as img:
            fmt = img.format
    except UnidentifiedImageError:
        raise UploadProblem(415, "bad_image", f"{shown}: not an image (PIL cannot identify the file); "
                            f"accepted formats: {', '.join(IMAGE_FORMATS)}", "image") from None
    except Exception:  # noqa: BLE001 - decompression-bomb errors and others: image_problem names them below
        fmt = None
    if fmt is not None and fmt not in IMAGE_FORMATS:
        raise UploadProblem(415, "bad_image", f"{shown}: unsupported image format {fmt}; accepted formats: "
                            f"{', '.join(IMAGE_FORMATS)}", "image")
    reason = image_problem(path, max_pixels=MAX_IMAGE_PIXELS)
    if reason is None:
        try:
            load_image(path, max_pixels=MAX_IMAGE_PIXELS).close()
        except DataError as e:
            reason = str(e)
    if reason is not None:
        reason = reason.replace(str(path), shown)  # the client's name, never the server's path
        status = 413 if "too large" in reason else (415 if "not an image" in reason else 400)
        raise UploadProblem(status, "bad_image", reason, "image")


def check_question(question: str | None) -> str:
    if question is None or not question.strip():
        raise UploadProblem(400, "bad_question", "the question is empty", "question")
    question = question.strip()
    if len(question) > MAX_QUESTION_CHARS:
        raise UploadProblem(400, "bad_question", f"the question has {len(question)} characters, over the limit "
                            f"of {MAX_QUESTION_CHARS}", "question")
    return question


def check_choices(choices: list[str]) -> list[str] | None:
    """The non-blank choices, stripped (None: none given)."""
    out = [c.strip() for c in choices if c.strip()]
    if len(out) > MAX_CHOICES:
        raise UploadProblem(400, "bad_choices", f"{len(out)} choices, over the limit of {MAX_CHOICES}", "choice")
    long = [c for c in out if len(c) > MAX_CHOICE_CHARS]
    if long:
        raise UploadProblem(400, "bad_choices", f"a choice has {len(long[0])} characters, over the limit of "
                            f"{MAX_CHOICE_CHARS}", "choice")
    return out or None
