"""Contact sheets: one PNG per concept showing its reference images, then each method's images.

Layout (top to bottom)::

    title bar        concept id, name, prompt, model
    REFERENCES band  the real reference images (warm background), then a thick rule
    one band per     the method's generated images in plan order (centroid first, then
    method           interpolants), each tile captioned with what it is (centroid, pair i→j
                     and t, inversion, random), its image id and its seed z-score

Each band has a label column on the left and wraps after ``columns`` tiles. Tiles are square
(``tile`` px): images smaller than a tile are enlarged by an integer factor with nearest-neighbour
(the demo's 32 px digits stay crisp), larger ones are shrunk to fit with Lanczos. Pure PIL, no IO:
the caller reads the images; the output is deterministic PNG bytes for the same input.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from normguide.data.images import encode_png
from normguide.data.text import printable

TILE = 128
COLUMNS = 8
LABEL_WIDTH = 190
CAPTION_HEIGHT = 44
PAD = 8
TITLE_HEIGHT = 64
RULE = 4  # the rule between the references and the generated images

BACKGROUND = (255, 255, 255)
REFERENCE_BAND = (255, 243, 222)
METHOD_BANDS = ((246, 247, 250), (255, 255, 255))
INK = (25, 25, 25)
MUTED = (105, 105, 105)
RULE_INK = (60, 60, 60)
REFERENCE_INK = (170, 95, 0)


@dataclass(frozen=True)
class Tile:
    """One image on a sheet and its caption lines (first line in ink, the others muted)."""

    image: Image.Image
    caption: tuple[str, ...]


@dataclass(frozen=True)
class Band:
    """A row group: a label (title and smaller lines under it) and its tiles."""

    title: str
    lines: tuple[str, ...]
    tiles: tuple[Tile, ...]
    reference: bool = False


@dataclass(frozen=True)
class SheetLayout:
    """Where everything goes: the sheet's size, each band's box and each tile's image box,
    in band order then tile order (``tile_boxes[b][i]`` is ``bands[b].tiles[i]``'s image)."""

    size: tuple[int, int]
    band_boxes: tuple[tuple[int, int, int, int], ...]
    tile_boxes: tuple[tuple[tuple[int, int, int, int], ...], ...]
    rule_y: int | None = None
    columns: int = COLUMNS
    tile: int = TILE

    @property
    def num_tiles(self) -> int:
        return sum(len(b) for b in self.tile_boxes)


def sheet_layout(tiles_per_band: list[int], *, reference_bands: int = 1, columns: int = COLUMNS,
                 tile: int = TILE) -> SheetLayout:
    """The layout of a sheet whose bands hold ``tiles_per_band`` tiles; the first
    ``reference_bands`` bands are references, followed by the rule. A band with no tiles still
    takes one (empty) row, so its label shows."""
    if columns < 1 or tile < 8:
        raise ValueError(f"columns must be ≥ 1 and tile ≥ 8, got columns={columns}, tile={tile}")
    cell_w, cell_h = tile + PAD, tile + CAPTION_HEIGHT + PAD
    used_cols = max([min(n, columns) for n in tiles_per_band] + [1])
    width = LABEL_WIDTH + used_cols * cell_w + PAD
    y = TITLE_HEIGHT
    band_boxes, tile_boxes, rule_y = [], [], None
    for b, n in enumerate(tiles_per_band):
        if b == reference_bands and reference_bands > 0:
            rule_y = y
            y += RULE
        rows = max(1, math.ceil(n / columns))
        height = rows * cell_h + PAD
        band_boxes.append((0, y, width, y + height))
        boxes = []
        for i in range(n):
            x0 = LABEL_WIDTH + (i % columns) * cell_w
            y0 = y + PAD + (i // columns) * cell_h
            boxes.append((x0, y0, x0 + tile, y0 + tile))
        tile_boxes.append(tuple(boxes))
        y += height
    return SheetLayout(size=(width, y + PAD), band_boxes=tuple(band_boxes), tile_boxes=tuple(tile_boxes),
                       rule_y=rule_y, columns=columns, tile=tile)


def fit_tile(image: Image.Image, tile: int = TILE) -> Image.Image:
    """``image`` as an RGB square of ``tile`` px: enlarged by the largest integer factor that fits
    (nearest-neighbour) or shrunk to fit (Lanczos), centred on white."""
    image = image.convert("RGB")
    w, h = image.size
    if max(w, h) <= tile:
        k = max(1, tile // max(w, h))
        resized = image.resize((w * k, h * k), Image.Resampling.NEAREST)
    else:
        s = tile / max(w, h)
        resized = image.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)
    out = Image.new("RGB", (tile, tile), BACKGROUND)
    out.paste(resized, ((tile - resized.width) // 2, (tile - resized.height) // 2))
    return out


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled scalable font (the same glyphs on every machine with this Pillow)."""
    return ImageFont.load_default(size=size)


#: Characters the bundled font has no glyph for (they would draw as boxes), and what to draw.
_ASCII = str.maketrans({"→": "->", "–": "-", "—": "-", "×": "x", "≤": "<=", "≥": ">=", "−": "-"})


def _fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, size: int) -> str:
    """``text`` (glyphs the font lacks spelled in ASCII) cut with an ellipsis so it is at most
    ``width`` px wide; control characters escaped (a newline would make PIL draw several lines,
    and its width measure refuses them)."""
    text = printable(text).translate(_ASCII)
    f = font(size)
    if draw.textlength(text, font=f) <= width:
        return text
    while text and draw.textlength(text + "…", font=f) > width:
        text = text[:-1]
    return text + "…"


def render_sheet(title: str, subtitle: str, bands: list[Band], *, columns: int = COLUMNS, tile: int = TILE) -> bytes:
    """PNG bytes of a contact sheet (see the module docstring); reference bands come first."""
    n_ref = 0
    while n_ref < len(bands) and bands[n_ref].reference:
        n_ref += 1
    if any(b.reference for b in bands[n_ref:]):
        raise ValueError("reference bands must come before the method bands")
    layout = sheet_layout([len(b.tiles) for b in bands], reference_bands=n_ref, columns=columns, tile=tile)
    sheet = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    width = layout.size[0]

    # 1. Title bar
    draw.text((PAD * 2, 10), _fit_text(draw, title, width - 4 * PAD, 22), font=font(22), fill=INK)
    draw.text((PAD * 2, 40), _fit_text(draw, subtitle, width - 4 * PAD, 13), font=font(13), fill=MUTED)

    # 2. Bands: background, label column, tiles with captions
    method_band = 0
    for band, box, tile_boxes in zip(bands, layout.band_boxes, layout.tile_boxes):
        if band.reference:
            fill = REFERENCE_BAND
        else:
            fill = METHOD_BANDS[method_band % 2]
            method_band += 1
        draw.rectangle(box, fill=fill)
        x0, y0 = PAD * 2, box[1] + PAD + 4
        draw.text((x0, y0), _fit_text(draw, band.title, LABEL_WIDTH - 3 * PAD, 18), font=font(18),
                  fill=REFERENCE_INK if band.reference else INK)
        y = y0 + 26
        for line in band.lines:
            for part in textwrap.wrap(printable(line).translate(_ASCII), width=26) or [""]:
                draw.text((x0, y), part, font=font(12), fill=MUTED)
                y += 15
        for t, (tx0, ty0, tx1, ty1) in zip(band.tiles, tile_boxes):
            sheet.paste(fit_tile(t.image, tile), (tx0, ty0))
            draw.rectangle((tx0 - 1, ty0 - 1, tx1, ty1), outline=(200, 200, 200))
            cy = ty1 + 3
            for k, line in enumerate(t.caption[:3]):
                size = 12 if k == 0 else 10
                draw.text((tx0, cy), _fit_text(draw, line, tile, size), font=font(size), fill=INK if k == 0 else MUTED)
                cy += 14 if k == 0 else 12

    # 3. The rule between real and generated images
    if layout.rule_y is not None:
        draw.rectangle((0, layout.rule_y, width, layout.rule_y + RULE - 1), fill=RULE_INK)
    return encode_png(sheet)
