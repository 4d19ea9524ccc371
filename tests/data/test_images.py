"""Reference-image guards: corrupt, truncated, non-image, tiny and huge files are named."""

import io

import pytest
from PIL import Image

from normguide.data.images import ReferenceImageError, decode_reference, encode_png


def _png(size=(64, 48), mode="RGB"):
    buf = io.BytesIO()
    img = Image.new(mode, size, 128)
    img.paste(20 if mode == "L" else (20, 40, 60), (0, 0, max(1, size[0] // 2), size[1]))  # not one colour
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_decodes_to_rgb():
    img = decode_reference(_png(mode="L"), uri="x.png", concept_id="c")
    assert img.mode == "RGB" and img.size == (64, 48)
    jpg = io.BytesIO()
    Image.effect_noise((40, 40), 40).convert("RGB").save(jpg, format="JPEG")
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


# -- decoding rules (docs/limits.md): orientation, transparency, bit depth, constant images ----------
def _encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_exif_orientation_is_applied():
    import numpy as np

    a = np.full((48, 32, 3), 230, np.uint8)  # 32 wide, 48 tall; a dark bar on the top rows
    a[:8] = 20
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the camera held sideways
    data = _encode(Image.fromarray(a), "JPEG", exif=exif, quality=95)
    img = decode_reference(data, uri="phone.jpg", concept_id="c")
    assert img.size == (48, 32)  # today: (32, 48), used sideways
    px = np.asarray(img.convert("L"), dtype=float)
    assert px[:, -8:].mean() < 60 and px[:, :8].mean() > 200  # the bar is now on the right


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_dark_ink_on_transparent_is_dark_ink_on_white(mode):
    import numpy as np

    a = np.zeros((32, 32, 4), np.uint8)  # black everywhere; only the ink is opaque
    a[8:24, 12:20, 3] = 255
    img = Image.fromarray(a, "RGBA").convert(mode)
    assert Image.open(io.BytesIO(_encode(img))).mode == mode
    out = np.asarray(decode_reference(_encode(img), uri="ink.png", concept_id="c"))
    assert (out[0, 0] == 255).all() and (out[16, 16] == 0).all()  # today: all black, accepted silently


def test_transparent_palette_colour_is_background():
    import numpy as np

    p = Image.new("P", (32, 32), 0)
    p.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)
    p.paste(1, (8, 8, 24, 24))
    out = np.asarray(decode_reference(_encode(p, transparency=0), uri="p.png", concept_id="c"))
    assert (out[0, 0] == 255).all() and (out[16, 16] == 0).all()


def test_16_bit_greyscale_is_scaled_not_clipped():
    import numpy as np

    g = np.zeros((32, 32), np.uint16)
    g[:, 16:] = 20000  # 30 % grey
    g[:16, :16] = 65535
    data = _encode(Image.fromarray(g))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = np.asarray(decode_reference(data, uri="scan16.png", concept_id="c").convert("L"))
    assert out[0, 20] == round(20000 / 257) and out[0, 0] == 255 and out[20, 0] == 0  # today: 255, clipped


def test_float_images_in_unit_range_are_scaled():
    import numpy as np

    f = np.zeros((32, 32), np.float32)
    f[:, 16:] = 0.5
    data = _encode(Image.fromarray(f, "F"), "TIFF")
    out = np.asarray(decode_reference(data, uri="f.tiff", concept_id="c").convert("L"))
    assert out[0, 0] == 0 and out[0, 20] == 128


@pytest.mark.parametrize("img", [Image.new("RGB", (32, 32), (0, 0, 0)), Image.new("L", (32, 32), 200),
                                 Image.new("RGBA", (32, 32), (10, 20, 30, 0))], ids=["black", "grey", "transparent"])
def test_a_constant_image_is_refused_naming_the_file(img):
    with pytest.raises(ReferenceImageError, match=r"concept 'c': reference image 'blank.png' decodes to a constant image"):
        decode_reference(_encode(img), uri="blank.png", concept_id="c")


def test_shipped_example_references_decode_as_before():
    """The demo's references are plain RGB PNGs: the rules above change none of their pixels, so
    the example run's outputs keep their bytes."""
    import numpy as np

    from normguide.config import EXAMPLE_DIR

    files = sorted((EXAMPLE_DIR / "references").glob("*/*.png"))
    assert len(files) == 15
    for f in files:
        data = f.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            before = np.asarray(im.convert("RGB"))
        assert np.array_equal(np.asarray(decode_reference(data, uri=str(f), concept_id="c")), before), f
