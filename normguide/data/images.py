"""Reading reference images and encoding generated ones, with the guards bad input needs.

A reference image is any PIL-readable file; it is checked from its header before it is
decoded (size limits guard against decompression bombs), fully decoded (so a truncated file
fails here, not inside the model), and converted to RGB. Errors are :class:`ReferenceImageError`
and name the concept and the URI.
"""

from __future__ import annotations

import hashlib
import io
import warnings

from PIL import Image, UnidentifiedImageError

from normguide.errors import InputError

#: Smallest side accepted (a 1x1 "image" is almost certainly a placeholder or an error).
MIN_SIDE = 16
#: Largest pixel count accepted, checked from the header before decoding (8000 x 8000).
MAX_PIXELS = 64_000_000


class ReferenceImageError(InputError):
    """A reference image could not be used; the message names the concept and the file."""


def decode_reference(data: bytes, *, uri: str, concept_id: str) -> Image.Image:
    """Decode one reference image to RGB, or raise :class:`ReferenceImageError` saying why."""
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
    except ReferenceImageError:
        raise
    except UnidentifiedImageError:
        raise ReferenceImageError(f"{where} is not an image PIL can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ReferenceImageError(f"{where} is too large (decompression-bomb guard): {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ReferenceImageError(f"{where} is corrupt or truncated: {exc}") from None
    return img.convert("RGB")


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of an image, deterministic for the same pixels (no timestamps, no text chunks)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
