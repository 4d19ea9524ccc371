import pytest
import torch

from normguide.geometry import paper_interpolate


@pytest.mark.slow
def test_paper_solver_reproduces_reference_objective():
    """NAO.md: two independent seeds, d = 16384, n = 50: 2,000 steps reach 115.8 and the full
    10,000 reach 115.04; within 1% of 115.04 with the shorter budget (measured: 115.80).

    ~10 s on one idle core (conftest runs the geometry tests on one torch thread)."""
    torch.manual_seed(0)
    a, b = torch.randn(2, 16384)
    _, info = paper_interpolate(a, b, max_steps=2000, return_info=True)
    objective = info["objective"].item()
    assert info["steps"].item() == 2000  # NAO.md: the early stop never fires in float32
    assert abs(objective - 115.04) / 115.04 < 0.01, objective
