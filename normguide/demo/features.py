"""The demo's refinement feature model: a small convolutional autoencoder of digit images.

SeedSelect refinement (``normguide.diffusion.refine``) needs a feature model φ whose embedding of
a generated image is compared with the references' (CLIP for real checkpoints). For the demo this
network plays that part. It is deliberately NOT the evaluation's judge
(``normguide.demo.classifier``): other weights, another objective (pixel reconstruction, no
labels at all), another architecture. Refinement is gradient descent on φ's similarity; run it on
the judge and the optimiser would learn to please that one network (adversarial features, not
better digits), and the evaluation would then measure its own loss. With an independent φ a
recognisability gain under the judge means the images changed, not that the judge was fooled.

Trained by ``python scripts/train_demo.py --out normguide/demo/weights --only features`` (a step
that runs alone and touches no other weights) on the demo's ``"judge"`` split (every non-held-out
real digit, images only), with the classifier's shift augmentation. Its record is
``weights/features/TRAINING.json``.

API:

    load_demo_features(path=None) -> DigitFeatures   the shipped one (weights/features)
    DigitFeatures(images)            (B, 3, H, W) in [0, 1] -> (B, EMBED_DIM) codes, differentiable
    train_features(x, *, seed=0, epochs=12, ...) -> (DigitFeatures, record)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

INPUT_RESOLUTION = 32
EMBED_DIM = 32


class DigitAutoencoder(nn.Module):
    """(N, 1, 32, 32) in [0, 1] -> code (N, 32) -> reconstruction (N, 1, 32, 32) logits."""

    def __init__(self, width: int = 16, embed_dim: int = EMBED_DIM):
        super().__init__()
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(1, w, 3, stride=2, padding=1), nn.SiLU(),  # 16 x 16
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),  # 8 x 8
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),  # 4 x 4
            nn.Flatten(), nn.Linear(2 * w * 16, embed_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(embed_dim, 2 * w * 16), nn.SiLU(), nn.Unflatten(1, (2 * w, 4, 4)),
            nn.ConvTranspose2d(2 * w, 2 * w, 4, stride=2, padding=1), nn.SiLU(),  # 8 x 8
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), nn.SiLU(),  # 16 x 16
            nn.ConvTranspose2d(w, 1, 4, stride=2, padding=1),  # 32 x 32
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x * 2.0 - 1.0))


class DigitFeatures(nn.Module):
    """φ for refinement: RGB images in [0, 1] of any size -> the autoencoder's code.

    Grey = channel mean (the demo's images have three equal channels), resized bilinearly to
    32 px when needed."""

    def __init__(self, autoencoder: DigitAutoencoder, config: dict):
        super().__init__()
        self.autoencoder = autoencoder
        self.config = dict(config)
        self.name = "demo digit autoencoder (normguide.demo.features)"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.mean(dim=1, keepdim=True)
        if x.shape[-1] != INPUT_RESOLUTION or x.shape[-2] != INPUT_RESOLUTION:
            x = nn.functional.interpolate(x, size=(INPUT_RESOLUTION, INPUT_RESOLUTION), mode="bilinear",
                                          align_corners=False, antialias=True)
        return self.autoencoder.encoder(x * 2.0 - 1.0)

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.autoencoder.state_dict().items()}
        save_file(state, str(path / "model.safetensors"))
        (path / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_demo_features(path: str | Path | None = None) -> DigitFeatures:
    """The feature model saved in ``path`` (default: the shipped ``normguide/demo/weights/features``),
    in eval mode with frozen weights."""
    from safetensors.torch import load_file

    from normguide.demo import FEATURES_DIR

    path = Path(path) if path is not None else FEATURES_DIR
    if not (path / "model.safetensors").is_file() or not (path / "config.json").is_file():
        raise FileNotFoundError(f"no demo feature model in {str(path)!r} (model.safetensors + config.json)")
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    ae = DigitAutoencoder(width=config["width"], embed_dim=config["embed_dim"])
    ae.load_state_dict(load_file(str(path / "model.safetensors")))
    return DigitFeatures(ae, config).eval().requires_grad_(False)


def train_features(x: torch.Tensor, *, seed: int = 0, epochs: int = 12, batch_size: int = 64, lr: float = 2e-3,
                   width: int = 16, log=print) -> DigitFeatures:
    """Train the autoencoder on ``x`` ((N, 1, 32, 32) in [0, 1], ``classifier.images_to_tensor``)
    to reconstruct each image from a randomly shifted, lightly noised copy of it (MSE on pixels,
    Adam, cosine learning rate); deterministic from ``seed`` on one machine and thread count.
    Labels are never seen."""
    from normguide.demo.classifier import augment

    if x.ndim != 4 or x.shape[1:] != (1, INPUT_RESOLUTION, INPUT_RESOLUTION):
        raise ValueError(f"x must be (N, 1, 32, 32), got {tuple(x.shape)}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    ae = DigitAutoencoder(width=width)
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    ae.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        loss_sum = 0.0
        for start in range(0, len(x), batch_size):
            xb = x[order[start : start + batch_size]]
            recon = torch.sigmoid(ae(augment(xb, gen)))
            loss = nn.functional.mse_loss(recon, xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(xb)
        if epoch % 4 == 3 or epoch == epochs - 1:
            log(f"  features epoch {epoch + 1}/{epochs}: reconstruction mse {loss_sum / len(x):.5f}")
    config = {"width": width, "embed_dim": EMBED_DIM, "input_resolution": INPUT_RESOLUTION, "epochs": epochs,
              "batch_size": batch_size, "lr": lr, "seed": seed, "objective": "denoising autoencoder (pixel MSE)"}
    return DigitFeatures(ae.eval().requires_grad_(False), config)
