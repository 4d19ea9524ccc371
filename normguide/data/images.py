"""Reading reference images and encoding generated ones, with the guards bad input needs.

A reference image is any PIL-readable file; it is checked from its header before it is
decoded (size limits guard against decompression bombs), fully decoded (so a truncated file
fails here, not inside the model), and converted to RGB (:func:`decode_reference`):

1. EXIF orientation is applied (a phone photo taken upright is used upright);
2. transparency (RGBA, LA, PA, P with a transparent colour, ...) is composited on the model's
   background (white unless a model says otherwise) *before* the conversion to RGB, so dark
   ink on a transparent background is dark ink on white, not black on black;
3. high bit depths are scaled, not clipped: 16-bit greyscale (``I;16``, and ``I`` from 16-bit
   PNGs) by 255/65535, 32-bit integer images likewise when their values fit 16 bits (else by
   their own maximum), floating-point images in [0, 1] by 255 (other ranges by their extrema);
4. an image that decodes to one colour (every pixel the same) is refused: it carries nothing
   to invert, and is almost always a failed export or a fully transparent layer.

Errors are :class:`ReferenceImageError` and name the concept and the URI.
"""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from normguide.errors import InputError

#: Smallest side accepted (a 1x1 "image" is almost certainly a placeholder or an error).
MIN_SIDE = 16
#: Largest pixel count accepted, checked from the header before decoding (8000 x 8000).
MAX_PIXELS = 64_000_000
#: The background transparent references are composited on (the demo model's, and the usual one
#: of product shots and scanned drawings).
WHITE = (255, 255, 255)
_TRANSPARENT_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class ReferenceImageError(InputError):
    """A reference image could not be used; the message names the concept and the file."""


def decode_reference(data: bytes, *, uri: str, concept_id: str, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Decode one reference image to RGB (module doc: orientation, transparency on
    ``background``, bit depth), or raise :class:`ReferenceImageError` saying why."""
    where = f"concept {concept_id!r}: reference image {uri!r}"
    if not data:
        raise ReferenceImageError(f"{where} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ReferenceImageError(
                    f"{where} is {w}x{h} pixels, more than the {MAX_PIXELS:,} allowed "
                    "(decompression-bomb guard); downscale it first"
                )
            if min(w, h) < MIN_SIDE:
                raise ReferenceImageError(f"{where} is {w}x{h} pixels; each side must be at least {MIN_SIDE}")
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = to_rgb(img, background)
    except ReferenceImageError:
        raise
    except UnidentifiedImageError:
        raise ReferenceImageError(f"{where} is not an image PIL can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ReferenceImageError(f"{where} is too large (decompression-bomb guard): {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ReferenceImageError(f"{where} is corrupt or truncated: {exc}") from None
    lo, hi = zip(*rgb.getextrema())
    if lo == hi:
        raise ReferenceImageError(f"{where} decodes to a constant image (every pixel is RGB {lo}); "
                                  "it shows nothing to invert")
    return rgb


def to_rgb(img: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """An RGB image of ``img``: transparency composited on ``background`` first, high bit depths
    scaled to 8 bits (module doc)."""
    mode = img.mode
    if mode == "RGB":
        return img.convert("RGB")
    if mode.startswith("I") or mode == "F":
        img = _to_8bit(img)
        mode = img.mode
    if mode in _TRANSPARENT_MODES or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img.convert("RGB")


def _to_8bit(img: Image.Image) -> Image.Image:
    """An ``L`` image of a 16/32-bit integer or float greyscale image, scaled (not clipped)."""
    a = np.asarray(img)
    if img.mode == "F":
        a = a.astype(np.float64)
        finite = a[np.isfinite(a)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            lo, hi = 0.0, 1.0
        scaled = (np.nan_to_num(a, nan=lo) - lo) / ((hi - lo) or 1.0) * 255.0
    else:
        a = a.astype(np.float64)
        if img.mode.startswith("I;16"):
            top = 65535.0
        else:  # "I": 16-bit PNGs open as I; anything larger is scaled by its own maximum
            peak = float(a.max()) if a.size else 0.0
            top = 255.0 if peak <= 255 and a.min() >= 0 else (65535.0 if peak <= 65535 else peak)
            a = np.clip(a, 0, None)
        scaled = a / top * 255.0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of an image, deterministic for the same pixels (no timestamps, no text chunks)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
