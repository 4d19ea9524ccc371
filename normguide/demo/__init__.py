"""The trained demo model: scikit-learn's handwritten digits as a tiny text-to-image task.

- ``digits``: the data and its fixed splits (held-out references and test images, a long-tailed
  generative training split, the judge's training split), prompts, image conversion.
- ``classifier``: the shipped digit classifier ("judge") that scores generated images.
- ``features``: the refinement feature model (an autoencoder, not the judge: see its docstring).
- the script that trained the shipped weights is ``scripts/train_demo.py`` in a checkout (not part of the installed package).
- ``weights/``: the shipped pipeline (``weights/pipeline``, loaded by ``load_pipeline("demo")``),
  the classifier (``weights/classifier``) and the training record (``weights/TRAINING.md``/``.json``).

Importing this package imports nothing heavy; import the submodules you need.
"""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PIPELINE_DIR = WEIGHTS_DIR / "pipeline"
CLASSIFIER_DIR = WEIGHTS_DIR / "classifier"
FEATURES_DIR = WEIGHTS_DIR / "features"
