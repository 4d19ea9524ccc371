"""normguide.geometry: norm priors, LERP/SLERP/COG baselines, NAO geodesics and centroids,
honest energies, and the paper's reference solver and pipeline. Pure torch (no Prefect,
diffusers or IO). The method and its numerics are documented in README.md next to this file.

Seeds are vectors in the last dimension (..., d); leading dimensions are batch dimensions.
"""

from ._numerics import EPS
from .baselines import cog, cog_centroid, lerp, mean_centroid, normalized_centroid, slerp
from .centroid import nao_centroid, nao_centroid_paths
from .energy import centroid_energy, path_energy
from .nao import geodesic_energy, nao_interpolate
from .paper import paper_centroid, paper_interpolate, paper_reference_seeds
from .prior import ChiPrior, FittedNormPrior, NormPrior

__all__ = [
    "EPS", "NormPrior", "ChiPrior", "FittedNormPrior", "lerp", "slerp", "cog", "mean_centroid",
    "normalized_centroid", "cog_centroid", "nao_interpolate", "nao_centroid", "nao_centroid_paths",
    "geodesic_energy", "path_energy", "centroid_energy", "paper_interpolate", "paper_centroid",
    "paper_reference_seeds",
]
