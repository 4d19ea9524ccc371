"""The seed methods' names and one-line descriptions, without torch: what the configuration
validates ``plan.methods`` against and what ``normguide methods`` lists. The methods themselves
(their geometry) are ``normguide.data.plan.SEED_METHODS``, which must name exactly these, in
this order (checked when it is imported).
"""

from __future__ import annotations

METHOD_DESCRIPTIONS: dict[str, str] = {
    "nao": "NAO centroid and geodesics under the chi prior of N(0, I) seeds",
    "nao-fitted": "NAO under a norm prior fitted to the concept's inverted seeds",
    "paper": "the paper's reference solver (Adam on the midpoint objective)",
    "paper-reference": "the paper's reference pipeline exactly: 2 inversions, seeds from both centroid paths",
    "slerp": "spherical interpolation; centroid: mean direction at the prior's mode",
    "lerp": "linear interpolation; centroid: Euclidean mean",
    "cog": "COG / LOL (Bodin et al.): sqrt(K) times the mean",
    "norm-mean": "mean direction at the inputs' mean norm (COG/LOL family, safe for many correlated inputs)",
    "circle": "Diff-II: random angles on the whole circle through two inversions",
    "random": "prompt only: fresh N(0, I) seeds, one integer seed per image",
}
#: Method names in registry order.
METHODS: tuple[str, ...] = tuple(METHOD_DESCRIPTIONS)

__all__ = ["METHODS", "METHOD_DESCRIPTIONS"]
