"""Reference-image guards: corrupt, truncated, non-image, tiny and huge files are named."""

import io

import pytest
from PIL import Image

from normguide.data.images import ReferenceImageError, decode_reference, encode_png


def _png(size=(64, 48), mode="RGB"):
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, format="PNG")
    return buf.getvalue()


def test_decodes_to_rgb():
    img = decode_reference(_png(mode="L"), uri="x.png", concept_id="c")
    assert img.mode == "RGB" and img.size == (64, 48)
    jpg = io.BytesIO()
    Image.new("RGBA", (40, 40)).convert("RGB").save(jpg, format="JPEG")
    assert decode_reference(jpg.getvalue(), uri="x.jpg", concept_id="c").size == (40, 40)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "is empty"),
        (b"hello, not an image", "not an image PIL can read"),
        (_png()[:60], "corrupt or truncated"),
        (_png(size=(1, 1)), "1x1 pixels"),
    ],
)
def test_bad_images_name_concept_and_file(data, match):
    with pytest.raises(ReferenceImageError, match=match) as ei:
        decode_reference(data, uri="s3://b/refs/bad.png", concept_id="my-concept")
    assert "my-concept" in str(ei.value) and "s3://b/refs/bad.png" in str(ei.value)


def test_decompression_bomb_rejected_from_header():
    # a 20000x20000 1-bit PNG is small on disk but 400 M pixels when decoded
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 2_000_000
    with pytest.raises(ReferenceImageError, match="decompression-bomb"):
        decode_reference(buf.getvalue(), uri="bomb.png", concept_id="c")


def test_png_encoding_is_deterministic():
    img = Image.effect_noise((32, 32), 40).convert("RGB")
    assert encode_png(img) == encode_png(img.copy())
