"""Regenerate the shipped example: the demo model's rare digits, with held-out real references.

The concept table and its reference images live inside the package
(``normguide/demo/example/``), so ``pip install .`` and then ``normguide run`` work from any
directory. One concept per rare digit of the demo model (``normguide.demo.digits.RARE_CLASSES``:
digits the model saw only 8 times in training), each with ``REFERENCES`` real images from the
held-out reference pool (never trained on, disjoint from the evaluation's test images).

Run from the repository root: ``python examples/make_examples.py``; the outputs are committed.
"""

from __future__ import annotations

from pathlib import Path

from normguide.data.schema import write_concept_table
from normguide.demo import digits

OUT = Path(__file__).resolve().parent.parent / "normguide" / "demo" / "example"
REFERENCES = 5


def main() -> None:
    rows = []
    for label in digits.RARE_CLASSES:
        name = digits.CLASS_NAMES[label]
        refs = []
        for i, image in enumerate(digits.reference_images(label, n=REFERENCES)):
            rel = f"references/{name}/{i:02d}.png"
            (OUT / rel).parent.mkdir(parents=True, exist_ok=True)
            image.save(OUT / rel, optimize=False)
            refs.append(rel)
        rows.append({"concept_id": f"digit-{name}", "name": name, "reference_uris": refs,
                     "prompt": digits.prompt_for(label), "num_images": None})
    write_concept_table(rows, OUT / "concepts.parquet")
    print(f"wrote {len(rows)} concepts to {OUT / 'concepts.parquet'}")


if __name__ == "__main__":
    main()
