"""The inverters (reference image -> seed), by name: what the run config's ``inversion.inverter``
names and the manifest records. Torch-free: the config validates names against this table.

Every inverter is deterministic and returns the end point of its integration itself (no noise
mixed in), so the seed it returns is the image's seed. Which families run which inverter is the
families' business (``Family.inverters``); a family asked for an inverter it cannot run is
refused up front, naming both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Inverter:
    name: str
    kind: str  # "ddim" (SD families) or "flow" (flow-matching families)
    order: int  # order of the solver
    calls: str  # model calls for n steps (per guidance branch)
    description: str


INVERTERS: dict[str, Inverter] = {
    inv.name: inv
    for inv in (
        Inverter("ddim", "ddim", 1, "n", "DDIM inversion (eta 0) over the sampling grid, upwards."),
        Inverter("ddim-reg", "ddim", 1, "n",
                 "DDIM inversion with pix2pix-zero's noise regularisation (auto-correlation and KL penalties on the "
                 "predicted noise at every step; deterministic rolls)."),
        Inverter("flow-euler", "flow", 1, "n",
                 "Flow-matching ODE integrated backwards (sigmas 0 -> 1) with Euler steps: the exact mirror of the "
                 "pipelines' Euler sampler."),
        Inverter("flow-midpoint", "flow", 2, "2n",
                 "Second-order flow inversion: the explicit midpoint rule (RF-Solver's second-order step)."),
        Inverter("flow-fireflow", "flow", 2, "n+1",
                 "FireFlow: the midpoint rule reusing the previous midpoint velocity (one call per step)."),
    )
}

INVERTER_NAMES: tuple[str, ...] = tuple(INVERTERS)


def check_inverter_name(name: str | None, *, field: str = "inversion.inverter") -> str | None:
    """``name`` when it is None (the family's default) or a known inverter; ValueError naming
    ``field`` and the known ones otherwise."""
    if name is not None and name not in INVERTERS:
        raise ValueError(f"{field}: unknown inverter {name!r}; known: {', '.join(INVERTER_NAMES)} "
                         "(or leave it unset for the model family's default)")
    return name


def model_calls(name: str, steps: int) -> int:
    """Denoiser passes of inverter ``name`` over ``steps`` steps (per guidance branch)."""
    calls = INVERTERS[name].calls
    return {"n": steps, "2n": 2 * steps, "n+1": steps + 1}[calls]
