"""normguide.geometry: norm priors, LERP/SLERP/COG baselines, NAO geodesics and centroids,
honest energies, and the paper's reference solver and pipeline. Pure torch (no Prefect,
diffusers or IO). The method and its numerics are documented in README.md next to this file.

Seeds are vectors in the last dimension (..., d); leading dimensions are batch dimensions.
"""

from ._numerics import EPS
from .baselines import cog, cog_centroid, lerp, mean_centroid, normalized_centroid, slerp
from .combinators import circle_interpolate, norm_keeping_centroid, norm_keeping_interpolate
from .centroid import nao_centroid, nao_centroid_paths
from .energy import centroid_energy, path_energy
from .nao import geodesic_energy, nao_interpolate
from .paper import paper_centroid, paper_interpolate, paper_reference_seeds
from .prior import ChiPrior, FittedNormPrior, NormPrior

__all__ = [
    "EPS",
    "ChiPrior",
    "FittedNormPrior",
    "NormPrior",
    "centroid_energy",
    "circle_interpolate",
    "cog",
    "cog_centroid",
    "geodesic_energy",
    "lerp",
    "mean_centroid",
    "nao_centroid",
    "nao_centroid_paths",
    "nao_interpolate",
    "norm_keeping_centroid",
    "norm_keeping_interpolate",
    "normalized_centroid",
    "paper_centroid",
    "paper_interpolate",
    "paper_reference_seeds",
    "path_energy",
    "slerp",
]
