"""Image checks for the dataset loaders, and the one way model code opens an image.

`check_image` is what a loader calls for every example: it fails early, with a `DataError` that
names the dataset file, the line (or record) and the field, rather than deep inside a training
run. It opens the file with PIL and runs `Image.verify()`, which reads the header and, for PNG,
checks every chunk's CRC (so a truncated or corrupt PNG is caught); it does not decode the pixels,
so a JPEG with a damaged body may only fail in `load_image`.

**[choice]** Pixel limit: `MAX_IMAGE_PIXELS` = 40,000,000 (40 megapixels, e.g. 8000 x 5000).
The datasets this project reads are photographs well under it (COCO images are about 0.3 MP).
An image over the limit is rejected as "too large"; PIL's own decompression-bomb guard
(`PIL.Image.DecompressionBombWarning` / `DecompressionBombError`, about 89 / 179 MP) is turned
into the same error. Pass `max_pixels=` to change the limit, or None to keep only PIL's guard.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mmboundary.errors import DataError

MAX_IMAGE_PIXELS = 40_000_000
"""The project's limit on width x height of an input image (40 megapixels)."""


class _Bad(Exception):
    """Internal: the reason an image cannot be used (turned into a DataError by the caller)."""


def _open_checked(path: Path, max_pixels: int | None, *, verify: bool) -> Image.Image:
    """Open `path` with PIL; raise `_Bad(reason)` with a short reason when it is not usable."""
    if not path.exists():
        raise _Bad(f"image file not found: {path}")
    if not path.is_file():
        raise _Bad(f"image path is not a regular file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _Bad(f"image too large (PIL decompression-bomb guard): {path}: {e}") from e
    except UnidentifiedImageError as e:
        raise _Bad(f"not an image (PIL cannot identify the file): {path}") from e
    except OSError as e:  # permission denied, I/O error
        raise _Bad(f"image file unreadable: {path}: {e}") from e
    try:
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise _Bad(f"image too large: {width}x{height} = {width * height:,} pixels, over the "
                       f"limit of {max_pixels:,}: {path}")
        if verify:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    img.verify()
            except Exception as e:  # PIL raises SyntaxError, OSError, struct.error, ... here
                raise _Bad(f"corrupt or truncated image: {path}: {type(e).__name__}: {e}") from e
    except BaseException:
        img.close()
        raise
    return img


def image_problem(path: str | Path, *, max_pixels: int | None = MAX_IMAGE_PIXELS) -> str | None:
    """Why the image at `path` cannot be used (a short reason naming the path), or None if it can.

    The checks of `check_image`, for callers that build their own error.
    """
    try:
        img = _open_checked(Path(path), max_pixels, verify=True)
    except _Bad as e:
        return str(e)
    img.close()
    return None


def check_image(path: str | Path, *, file: str | Path | None, line: int | None,
                field: str = "image", max_pixels: int | None = MAX_IMAGE_PIXELS) -> None:
    """Check that `path` is a readable, valid image within the pixel limit.

    Raises `DataError` naming `file` (the dataset file that refers to the image), `line` and
    `field`, with a short reason: not found, not a regular file, unreadable, not an image,
    corrupt or truncated, too large.
    """
    reason = image_problem(path, max_pixels=max_pixels)
    if reason is not None:
        raise DataError(reason, file=file, line=line, field=field)


def load_image(path: str | Path, *, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image for the model code: decoded, in RGB.

    Transparent images (RGBA, LA, palette with transparency) are composited onto white. EXIF
    orientation is not applied (as in the usual VLM preprocessing). Raises `DataError` naming the
    image file when it cannot be used (the same checks as `check_image`, plus a full decode).
    """
    path = Path(path)
    try:
        img = _open_checked(path, max_pixels, verify=False)
    except _Bad as e:
        raise DataError(str(e), file=path) from e.__cause__
    try:
        with img:
            img.load()
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            if img.mode in ("RGBA", "LA", "PA"):
                rgba = img.convert("RGBA")
                out = Image.new("RGB", rgba.size, (255, 255, 255))
                out.paste(rgba, mask=rgba.getchannel("A"))
                return out
            return img.convert("RGB")
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"corrupt or truncated image: {type(e).__name__}: {e}", file=path) from e
