"""normguide.geometry: norm prior, LERP/SLERP/COG baselines, NAO geodesics and centroids,
honest energies, and the paper's reference solver. Pure torch (no Prefect, diffusers or IO).

Seeds are vectors in the last dimension (..., d); leading dimensions are batch dimensions.
"""

from ._numerics import EPS
from .baselines import cog, cog_centroid, lerp, mean_centroid, normalized_centroid, slerp
from .energy import centroid_energy, path_energy
from .nao import geodesic_energy, nao_centroid, nao_centroid_paths, nao_interpolate
from .paper import paper_centroid, paper_interpolate
from .prior import ChiPrior

__all__ = [
    "EPS", "ChiPrior", "lerp", "slerp", "cog", "mean_centroid", "normalized_centroid",
    "cog_centroid", "nao_interpolate", "nao_centroid", "nao_centroid_paths", "geodesic_energy",
    "path_energy", "centroid_energy", "paper_interpolate", "paper_centroid",
]
