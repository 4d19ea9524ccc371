"""Named groups of settings that a CLI flag applies at once (``normguide run --quick``).

A preset is a dict of dotted :class:`~normguide.config.RunConfig` paths; it is applied on top of
the defaults (or a ``--config`` file), and options given on the command line override it.
"""

from __future__ import annotations

#: ``--quick``: a look at what the run makes in a fraction of the time of the full default run
#: (fewer denoising steps, fewer images, no reconstruction pass), in its own output folder so it
#: never mixes with a full run. The images are rougher (10 DDIM steps); its run id differs from
#: the full run's, as every content setting is part of the id.
QUICK: dict[str, object] = {
    "output": "./outputs-quick",
    "inversion.num_inference_steps": 10,
    "inversion.reconstruction": False,
    "generation.num_inference_steps": 10,
    "plan.num_images": 4,
}


def describe(preset: dict[str, object]) -> str:
    """``output=./outputs-quick, inversion.num_inference_steps=10, ...`` (for --help)."""
    return ", ".join(f"{k}={v}" for k, v in preset.items())


__all__ = ["QUICK", "describe"]
