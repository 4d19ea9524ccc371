"""The digit "judge": a small CNN that says which digit an image shows, shipped with the demo model.

It scores generated images (recognisability), and its penultimate layer is the feature space for
fidelity/diversity metrics. Trained by ``scripts/train_demo.py`` on the ``"judge"`` split of
``normguide.demo.digits`` (every non-held-out real digit, rare classes included) with mild
augmentation (random shifts of up to ``MAX_SHIFT`` px, light pixel noise) so that it judges
generated digits, which are not pixel-aligned with the originals, fairly. Its accuracy on the
held-out ``"test"`` split is recorded in ``weights/TRAINING.json``.

Noise: trained with outlier exposure (``train_classifier``), the classifier gives non-digit images
near-uniform probabilities (max ≈ 0.11), but their ARGMAX is then arbitrary and the same for all
of them (it was "8" in the shipped training). So count an image as a digit only when the digit's
probability is high: ``predict`` returns -1 ("not a digit") below ``MIN_CONFIDENCE`` (0.5), and a
recognisability metric should use ``predict`` (or mean probability of the concept), never a bare
``predict_proba(...).argmax``. Real held-out digits have mean top probability ≈ 0.99.

Input conversion (``images_to_tensor``): any PIL image, any size or mode, goes through the pipeline's
own ``prepare_image`` (RGB, shorter side resized bicubically to 32 px, centre crop), then to grey
(PIL's ``L``), scaled to [0, 1]. A white digit on black, as ``digits.digit_to_image`` draws it.

API:

    load_digit_classifier(path=None) -> DigitClassifier       the shipped one (weights/classifier)
    DigitClassifier.predict_proba(images) -> np.ndarray (N, 10) float64, rows sum to 1
    DigitClassifier.predict(images, min_confidence=MIN_CONFIDENCE) -> np.ndarray (N,) int64;
                                             -1 where the top probability is below min_confidence
    DigitClassifier.embed(images) -> np.ndarray (N, EMBED_DIM) float32 (penultimate features, ReLU)
    DigitClassifier.save(path)                                model.safetensors + config.json
    images_to_tensor(images) -> torch.Tensor (N, 1, 32, 32) float32 in [0, 1]
    train_classifier(x, labels, *, seed=0, epochs=30, ...) -> DigitClassifier
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from PIL import Image

INPUT_RESOLUTION = 32
EMBED_DIM = 64
NUM_CLASSES = 10
MAX_SHIFT = 3
MIN_CONFIDENCE = 0.5
_BATCH = 256  # inference batch


class DigitNet(nn.Module):
    """(N, 1, 32, 32) in [0, 1] -> logits (N, 10); ``features`` gives the (N, 64) embedding."""

    def __init__(self, width: int = 32, embed_dim: int = EMBED_DIM, num_classes: int = NUM_CLASSES):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16 x 16
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8 x 8
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4 x 4
            nn.Flatten(),
            nn.Linear(2 * w * 16, embed_dim), nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(embed_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2.0 - 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def images_to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """(N, 1, 32, 32) float32 in [0, 1]: ``prepare_image`` to 32 px RGB, then grey."""
    from normguide.diffusion.ddim import prepare_image

    if len(images) == 0:
        return torch.zeros(0, 1, INPUT_RESOLUTION, INPUT_RESOLUTION)
    arrays = [np.asarray(prepare_image(im, INPUT_RESOLUTION).convert("L"), dtype=np.float32) for im in images]
    return torch.from_numpy(np.stack(arrays))[:, None] / 255.0


class DigitClassifier:
    """A trained ``DigitNet`` in eval mode on CPU, with numpy in/out helpers."""

    def __init__(self, net: DigitNet, config: dict):
        self.net = net.eval().requires_grad_(False)
        self.config = dict(config)

    def _run(self, images, fn) -> torch.Tensor:
        x = images if isinstance(images, torch.Tensor) else images_to_tensor(images)
        with torch.inference_mode():
            outs = [fn(chunk) for chunk in x.split(_BATCH)] if len(x) else [fn(x)]
        return torch.cat(outs)

    def predict_proba(self, images: Sequence[Image.Image] | torch.Tensor) -> np.ndarray:
        """(N, 10) class probabilities (float64) for PIL images (or an ``images_to_tensor`` batch)."""
        return torch.softmax(self._run(images, self.net).double(), dim=1).numpy()

    def predict(self, images: Sequence[Image.Image] | torch.Tensor, min_confidence: float = MIN_CONFIDENCE) -> np.ndarray:
        """(N,) predicted digit per image, or -1 where its probability is below ``min_confidence``
        (not recognisably a digit; 0 gives the plain argmax)."""
        proba = self.predict_proba(images)
        pred = proba.argmax(axis=1).astype(np.int64)
        pred[proba.max(axis=1) < min_confidence] = -1
        return pred

    def embed(self, images: Sequence[Image.Image] | torch.Tensor) -> np.ndarray:
        """(N, 64) penultimate-layer features (float32, non-negative)."""
        return self._run(images, self.net.features).numpy().astype(np.float32)

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(path / "model.safetensors"))
        (path / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_digit_classifier(path: str | Path | None = None) -> DigitClassifier:
    """The classifier saved in ``path`` (default: the shipped ``normguide/demo/weights/classifier``)."""
    from safetensors.torch import load_file

    from normguide.demo import CLASSIFIER_DIR

    path = Path(path) if path is not None else CLASSIFIER_DIR
    if not (path / "model.safetensors").is_file() or not (path / "config.json").is_file():
        raise FileNotFoundError(f"no digit classifier in {str(path)!r} (model.safetensors + config.json)")
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    net = DigitNet(width=config["width"], embed_dim=config["embed_dim"])
    net.load_state_dict(load_file(str(path / "model.safetensors")))
    return DigitClassifier(net, config)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shift of up to MAX_SHIFT px each way (zero = black padding), light pixel noise on half."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (MAX_SHIFT,) * 4)
    dx = torch.randint(0, 2 * MAX_SHIFT + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * MAX_SHIFT + 1, (n,), generator=gen)
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    noisy = torch.rand(n, 1, 1, 1, generator=gen) < 0.5
    noise = 0.03 * torch.randn(out.shape, generator=gen)
    return (out + noise * noisy).clamp(0.0, 1.0)


#: The shift-and-noise augmentation, also used to train the refinement features (``normguide.demo.features``).
augment = _augment


def _outliers(n: int, gen: torch.Generator) -> torch.Tensor:
    """n non-digit images (N, 1, 32, 32) in [0, 1]: per-pixel uniform noise, Gaussian noise around a
    random grey, smooth noise (random 2..16 px images upsampled), flat grey; a quarter of each."""
    r = INPUT_RESOLUTION
    kinds = torch.arange(n) % 4
    out = torch.empty(n, 1, r, r)
    for i in range(n):
        kind = int(kinds[i])
        if kind == 0:
            img = torch.rand(1, 1, r, r, generator=gen)
        elif kind == 1:
            img = torch.rand(1, generator=gen) + 0.25 * torch.randn(1, 1, r, r, generator=gen)
        elif kind == 2:
            side = int(torch.randint(2, 17, (1,), generator=gen))
            low = torch.rand(1, 1, side, side, generator=gen)
            img = nn.functional.interpolate(low, size=(r, r), mode="bilinear", align_corners=False)
        else:
            img = torch.rand(1, generator=gen).expand(1, 1, r, r)
        out[i] = img[0].clamp(0.0, 1.0)
    return out


def train_classifier(
    x: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    *,
    seed: int = 0,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 2e-3,
    width: int = 32,
    outliers_per_batch: int = 16,
    outlier_weight: float = 0.5,
    log=print,
) -> DigitClassifier:
    """Train a ``DigitNet`` on ``x`` ((N, 1, 32, 32) in [0, 1], from ``images_to_tensor``) with
    Adam, cosine learning rate, shift augmentation; deterministic from ``seed`` (on one machine and
    thread count).

    Outlier exposure (Hendrycks et al. 2019): each batch also holds ``outliers_per_batch`` non-digit
    images (``_outliers``: noise, smooth noise, flat grey) whose target is the uniform distribution
    (cross-entropy to uniform, weight ``outlier_weight``). Without it, noise is read as a confident
    "8" (measured: 75 % of uniform-noise images, mean max probability 0.43), which would make a
    run that draws noise look recognisable for that digit; with it, noise gets near-uniform
    probabilities."""
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if x.ndim != 4 or x.shape[1:] != (1, INPUT_RESOLUTION, INPUT_RESOLUTION) or len(x) != len(y):
        raise ValueError(f"x must be (N, 1, 32, 32) with one label per row, got {tuple(x.shape)} and {len(y)} labels")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = DigitNet(width=width)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            xb, yb = _augment(x[idx], gen), y[idx]
            if outliers_per_batch:
                xb = torch.cat([xb, _outliers(outliers_per_batch, gen)])
            all_logits = net(xb)
            logits = all_logits[: len(idx)]
            loss = nn.functional.cross_entropy(logits, yb)
            if outliers_per_batch:
                log_p = nn.functional.log_softmax(all_logits[len(idx) :], dim=1)
                loss = loss + outlier_weight * (-log_p.mean(dim=1)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            total += len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
        if epoch % 5 == 4 or epoch == epochs - 1:
            log(f"  classifier epoch {epoch + 1}/{epochs}: loss {loss_sum / total:.4f}, train acc {correct / total:.4f}")
    config = {"width": width, "embed_dim": EMBED_DIM, "num_classes": NUM_CLASSES, "input_resolution": INPUT_RESOLUTION,
              "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "max_shift": MAX_SHIFT,
              "outliers_per_batch": outliers_per_batch, "outlier_weight": outlier_weight}
    return DigitClassifier(net, config)
