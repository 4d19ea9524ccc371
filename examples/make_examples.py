"""Regenerate the shipped example: a concept table and a few reference images per concept.

The references are small procedural drawings (no downloads, no licences to track). Run from the
repository root: ``python examples/make_examples.py``; the outputs are committed.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from normguide.data.schema import write_concept_table

HERE = Path(__file__).resolve().parent
SIZE = 128


def _sky(rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE))
    top = (rng.randint(90, 140), rng.randint(150, 200), rng.randint(220, 255))
    d = ImageDraw.Draw(img)
    for y in range(SIZE):
        f = y / SIZE
        d.line([(0, y), (SIZE, y)], fill=tuple(int(c * (1 - 0.35 * f)) for c in top))
    return img


def lighthouse(rng: random.Random) -> Image.Image:
    img = _sky(rng)
    d = ImageDraw.Draw(img)
    d.rectangle([0, 100, SIZE, SIZE], fill=(40, 70, 140))
    x = rng.randint(40, 80)
    w = rng.randint(14, 20)
    for i, y in enumerate(range(30, 100, 12)):
        d.rectangle([x - w // 2, y, x + w // 2, y + 12], fill=(200, 30, 30) if i % 2 else (245, 245, 240))
    d.polygon([(x - w // 2 - 3, 30), (x + w // 2 + 3, 30), (x, 18)], fill=(60, 60, 60))
    d.ellipse([x - 5, 22, x + 5, 32], fill=(255, 230, 90))
    return img


def cactus(rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE), (rng.randint(220, 245), rng.randint(190, 215), rng.randint(140, 170)))
    d = ImageDraw.Draw(img)
    x = rng.randint(50, 78)
    g = (40, rng.randint(110, 150), 50)
    d.rounded_rectangle([x - 9, 30, x + 9, 115], radius=9, fill=g)
    d.rounded_rectangle([x - 30, 55, x - 20, 85], radius=5, fill=g)
    d.rectangle([x - 30, 78, x - 9, 86], fill=g)
    d.rounded_rectangle([x + 20, 45, x + 30, 75], radius=5, fill=g)
    d.rectangle([x + 9, 68, x + 30, 76], fill=g)
    d.rectangle([0, 112, SIZE, SIZE], fill=(180, 140, 90))
    return img


def balloon(rng: random.Random) -> Image.Image:
    img = _sky(rng)
    d = ImageDraw.Draw(img)
    cx, cy, r = rng.randint(45, 83), rng.randint(40, 60), rng.randint(22, 30)
    colours = [(230, 60, 60), (250, 200, 50), (60, 120, 220), (250, 250, 250)]
    rng.shuffle(colours)
    for i in range(4):
        d.pieslice([cx - r, cy - r, cx + r, cy + r], start=-90 + 45 * i, end=-45 + 45 * i, fill=colours[i])
        d.pieslice([cx - r, cy - r, cx + r, cy + r], start=90 + 45 * i, end=135 + 45 * i, fill=colours[i])
    d.line([(cx - r // 2, cy + r - 2), (cx - 5, cy + r + 18)], fill=(80, 60, 40))
    d.line([(cx + r // 2, cy + r - 2), (cx + 5, cy + r + 18)], fill=(80, 60, 40))
    d.rectangle([cx - 6, cy + r + 18, cx + 6, cy + r + 28], fill=(120, 80, 40))
    return img


CONCEPTS = [
    ("lighthouse", "striped lighthouse", lighthouse, 4),
    ("saguaro", "saguaro cactus", cactus, 3),
    ("hot-air-balloon", "hot air balloon", balloon, 3),
]


def main() -> None:
    rows = []
    for cid, name, draw, n in CONCEPTS:
        rng = random.Random(cid)
        folder = HERE / "references" / cid
        folder.mkdir(parents=True, exist_ok=True)
        refs = []
        for i in range(n):
            img = draw(rng).filter(ImageFilter.SMOOTH)
            path = folder / f"{i:02d}.png"
            img.save(path, optimize=True)
            refs.append(f"references/{cid}/{i:02d}.png")
        rows.append({"concept_id": cid, "name": name, "reference_uris": refs, "prompt": None, "num_images": None})
    write_concept_table(rows, HERE / "concepts.parquet")
    print(f"wrote {len(rows)} concepts to {HERE / 'concepts.parquet'}")


if __name__ == "__main__":
    main()
