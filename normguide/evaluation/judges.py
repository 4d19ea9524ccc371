"""Judges: the feature models that evaluation scores images with.

A judge turns images into (a) feature vectors (``embed``), the space in which similarity, precision /
recall / density / coverage and diversity are measured, and (b) class probabilities over named
concepts (``class_probs``), from which recognisability is computed.

Two judges ship:

- :class:`DigitsJudge`: the demo model's digit classifier (``normguide.demo.classifier``), a closed
  10-class vocabulary. Concept names are mapped to digits ("seven", "digit seven", "7").
- :class:`ClipJudge`: a CLIP model (``transformers.CLIPModel``) from a local directory, zero-shot
  over prompts "a photo of a {name}" for the run's concept names; never downloads.

Any object with the :class:`Judge` attributes works with :func:`normguide.evaluation.evaluate`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

DIGIT_NAMES: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@runtime_checkable
class Judge(Protocol):
    """What evaluation needs from a feature model.

    - ``name``: a short human-readable description (goes into the report).
    - ``embed(images)``: (N, D) float array, one feature vector per image.
    - ``class_probs(images, class_names)``: (N, C) float array, the probability of each of the given
      concept names for each image (rows sum to at most 1).
    - ``label_names(concept_names)``: the candidate labels that recognisability takes the argmax
      over; it contains every given concept name, unchanged and first, and may add more (a
      closed-vocabulary judge adds its other classes, so "recognised" means "beats every class the
      judge knows", not only the run's other concepts). Optional: a judge without it is scored over
      the run's concept names alone.
    - ``min_confidence``: the probability the winning label needs for an image to count as
      recognised (see :func:`~normguide.evaluation.metrics.recognisability`). Optional, default 0.
    """

    name: str

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def class_probs(self, images: Sequence[Image.Image], class_names: Sequence[str]) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------------
# Digits


def digit_index(name: str) -> int:
    """The digit (0-9) a concept name denotes: "seven", "Seven", "digit seven", "a handwritten digit
    seven" and "7" all give 7. Raises ValueError naming the concept when the name holds no digit or
    more than one distinct digit."""
    if not isinstance(name, str):
        raise ValueError(f"concept name {name!r} is not a string, so it names no digit")
    found = set()
    for token in re.findall(r"[a-z]+|\d+", name.lower()):
        if token in DIGIT_NAMES:
            found.add(DIGIT_NAMES.index(token))
        elif token.isdigit() and len(token) == 1:
            found.add(int(token))
    if len(found) != 1:
        what = "no digit" if not found else f"several digits ({', '.join(DIGIT_NAMES[i] for i in sorted(found))})"
        raise ValueError(
            f"concept name {name!r} names {what}; the digits judge knows only the digits "
            f"{', '.join(DIGIT_NAMES)} (or 0-9), e.g. 'seven' or 'digit 7'"
        )
    return found.pop()


class DigitsJudge:
    """The demo model's digit classifier as a judge.

    ``classifier``: an object with ``predict_proba(images) -> (N, 10)`` and ``embed(images) -> (N, D)``;
    default (None): ``normguide.demo.classifier.load_digit_classifier()``, imported and loaded on
    first use.

    Recognisability with this judge is the argmax over **all 10 digit classes** (``label_names``
    appends the digits that the run's concepts do not name), so an image of a "seven" that looks
    like a one is not recognised even when the run has no "one" concept; and the winning digit
    needs probability >= ``min_confidence`` (default 0.5, the demo classifier's own
    ``MIN_CONFIDENCE``): that classifier answers non-digits (noise) with near-uniform probabilities
    whose argmax is arbitrary but the same digit for all of them, which a bare argmax would count.
    """

    name = "digits classifier (normguide.demo)"

    def __init__(self, classifier: Any | None = None, *, min_confidence: float = 0.5) -> None:
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        self._classifier = classifier
        self.min_confidence = float(min_confidence)

    @property
    def classifier(self) -> Any:
        if self._classifier is None:
            from normguide.demo.classifier import load_digit_classifier

            self._classifier = load_digit_classifier()
        return self._classifier

    def label_names(self, concept_names: Sequence[str]) -> list[str]:
        """The given names, then the canonical names of the digits they do not cover (10 in all).
        Two concepts naming the same digit are an error (the judge cannot tell them apart)."""
        names = list(dict.fromkeys(concept_names))
        digits: dict[int, str] = {}
        for n in names:
            d = digit_index(n)
            if d in digits:
                raise ValueError(
                    f"concepts {digits[d]!r} and {n!r} both name the digit {DIGIT_NAMES[d]}; "
                    "the digits judge cannot tell them apart"
                )
            digits[d] = n
        return names + [DIGIT_NAMES[d] for d in range(10) if d not in digits]

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, 0))
        return np.asarray(self.classifier.embed(list(images)), dtype=np.float64)

    def class_probs(self, images: Sequence[Image.Image], class_names: Sequence[str]) -> np.ndarray:
        """Column j: the classifier's probability of the digit that ``class_names[j]`` names (out of
        all 10 digits, not renormalised over the given names)."""
        idx = [digit_index(n) for n in class_names]
        if len(images) == 0:
            return np.zeros((0, len(idx)))
        probs = np.asarray(self.classifier.predict_proba(list(images)), dtype=np.float64)
        if probs.ndim != 2 or probs.shape != (len(images), 10):
            raise ValueError(f"digit classifier returned probabilities of shape {probs.shape}, expected ({len(images)}, 10)")
        return probs[:, idx]


def digits_real_test(names: Mapping[str, str]) -> dict[str, list[Image.Image]]:
    """The demo's held-out real test digits for each concept: concept_id -> the ``"test"`` split
    images (``normguide.demo.digits``; never trained on, disjoint from the reference images) of the
    digit its name denotes (:func:`digit_index`). The ``real_test`` argument of ``evaluate`` for a
    run of the demo model."""
    from normguide.demo import digits

    test = digits.load_split("test")
    return {cid: test.of_class(digit_index(name)).images() for cid, name in names.items()}


# --------------------------------------------------------------------------------------------------
# CLIP


def _image_processor_class():
    import transformers

    # transformers >= 5 without torchvision: CLIPImageProcessor falls back to the PIL one with a
    # notice; ask for the PIL one directly. transformers 4.x: CLIPImageProcessor is the PIL one.
    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def check_clip_directory(path: str | Path, *, what: str, tokenizer: bool = True) -> Path:
    """``path`` as a Path when it is a saved CLIP model directory (``save_pretrained`` layout:
    config.json with ``model_type: clip``, weights, preprocessor_config.json and, with
    ``tokenizer``, the tokenizer files); else FileNotFoundError / ValueError starting with
    ``what`` (the setting or component that names the path). Reads config.json only."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what}: model directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise ValueError(f"{what}: {str(path)!r} is not a directory (expected a saved CLIP model directory)")
    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{what}: {str(path)!r} is not a CLIP model directory (no config.json)") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{what}: cannot read {str(config_file)!r}: {exc}") from exc
    if not isinstance(config, dict) or config.get("model_type") != "clip":
        got = config.get("model_type") if isinstance(config, dict) else None
        raise ValueError(
            f"{what}: {str(path)!r} is not a CLIP model directory "
            f"(config.json has model_type {got!r}, expected 'clip')"
        )
    # Checked here because transformers 5 silently builds an empty tokenizer from a directory
    # without tokenizer files (every word becomes <unk>).
    has_tokenizer = (path / "tokenizer.json").is_file() or (
        (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
    )
    lacking = [
        item
        for item, ok in (
            ("tokenizer files (tokenizer.json, or vocab.json + merges.txt)", has_tokenizer or not tokenizer),
            ("preprocessor_config.json (the image processor)", (path / "preprocessor_config.json").is_file()),
        )
        if not ok
    ]
    if lacking:
        raise ValueError(f"{what}: {str(path)!r} lacks {' and '.join(lacking)}; save the CLIPProcessor with the model")
    return path


def load_clip_image_model(path: str | Path, *, what: str, device: str = "cpu"):
    """(CLIPModel in eval mode on ``device``, image processor) from a local CLIP directory
    (:func:`check_clip_directory`, no tokenizer needed); never downloads. Errors start with ``what``."""
    path = check_clip_directory(path, what=what, tokenizer=False)
    from transformers import CLIPModel

    try:
        model = CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval()
        processor = _image_processor_class().from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{what}: cannot load a CLIP model and image processor from {str(path)!r}: {exc}") from exc
    return model, processor


class ClipJudge:
    """A CLIP model from a local directory (``save_pretrained`` layout: config.json with
    ``model_type: clip``, weights, tokenizer files, preprocessor_config.json). Nothing is downloaded.

    - ``class_probs``: zero-shot: softmax over the names of ``logit_scale · cos(image, text)``, the
      texts being ``prompt_template`` with ``{name}`` replaced as plain text ("a photo of a {name}").
    - ``embed``: the L2-normalised image embeddings (CLIP's projection output).
    - ``label_names``: the run's concept names plus ``distractors`` (default none). With a single
      concept and no distractors recognisability is undefined (evaluation reports NaN).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        prompt_template: str = "a photo of a {name}",
        distractors: Sequence[str] = (),
    ) -> None:
        from normguide.data.text import check_template

        check_template(prompt_template, where="CLIP judge prompt_template")  # only plain {name}
        if "{name}" not in prompt_template:
            raise ValueError(f"CLIP judge prompt_template must contain '{{name}}', got {prompt_template!r}")
        path = check_clip_directory(path, what="CLIP judge")

        import torch
        from transformers import AutoTokenizer, CLIPModel

        try:
            self.model = CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.processor = _image_processor_class().from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"CLIP judge: cannot load a CLIP model, tokenizer and image processor from {str(path)!r}: {exc}") from exc
        self._torch = torch
        self.path = path
        self.device = device
        self.batch_size = int(batch_size)
        self.prompt_template = prompt_template
        self.distractors = tuple(distractors)
        self.name = f"CLIP zero-shot ({path.name}, prompts {prompt_template!r})"

    def label_names(self, concept_names: Sequence[str]) -> list[str]:
        names = list(dict.fromkeys(concept_names))
        return names + [d for d in self.distractors if d not in names]

    def _image_features(self, images: Sequence[Image.Image]) -> np.ndarray:
        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                batch = [im.convert("RGB") for im in images[i : i + self.batch_size]]
                pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
                # vision tower + projection directly: get_image_features returns a tensor in
                # transformers 4.x and an output object in 5.x.
                pooled = self.model.vision_model(pixel_values=pixels).pooler_output
                feats = self.model.visual_projection(pooled)
                out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def _text_features(self, class_names: Sequence[str]) -> np.ndarray:
        torch = self._torch
        from normguide.data.text import render_template

        texts = [render_template(self.prompt_template, where="CLIP judge prompt_template", name=n) for n in class_names]
        tok = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            pooled = self.model.text_model(
                input_ids=tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device)
            ).pooler_output
            feats = self.model.text_projection(pooled)
            return torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy().astype(np.float64)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, int(self.model.config.projection_dim)))
        return self._image_features(images)

    def class_probs(self, images: Sequence[Image.Image], class_names: Sequence[str]) -> np.ndarray:
        if len(class_names) == 0:
            raise ValueError("class_probs needs at least one class name")
        if len(images) == 0:
            return np.zeros((0, len(class_names)))
        img = self._image_features(images)
        txt = self._text_features(class_names)
        scale = float(self.model.logit_scale.detach().exp().cpu())
        logits = scale * img @ txt.T
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)
