import pytest
import torch

from normguide.geometry import ChiPrior

# Per-dtype tolerances for properties stated on outputs of the given dtype.
TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-4}, torch.float64: {"rtol": 1e-9, "atol": 1e-9}}
D = 256  # small seed dimension: the geometry is the same, tests stay fast


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The geometry tests run many small tensor ops; on the shared 2-core CI machine under load,
    two torch threads made them ~15x slower than one (suite 160 s vs ~11 s, measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=[0, 1, 2], ids=lambda s: f"seed{s}")
def seed(request):
    return request.param


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


def make_pair(regime: str, seed: int, dtype, d: int = D, batch=()):
    """Endpoint pairs in the regimes NAO must handle (norms relative to the chi mode)."""
    g = torch.Generator().manual_seed(seed)
    m = ChiPrior(d).mode
    a = torch.randn(*batch, d, generator=g, dtype=torch.float64)
    b = torch.randn(*batch, d, generator=g, dtype=torch.float64)
    unit = lambda x: x / x.norm(dim=-1, keepdim=True)
    if regime == "typical":
        pass
    elif regime == "atypical":
        a, b = 0.8 * m * unit(a), 1.15 * m * unit(b)
    elif regime == "near":
        b = a + 1e-3 * b
    elif regime == "antipodal":
        b = -a + 1e-3 * b
    elif regime == "same_ray":
        b = 1.1 * a
    elif regime == "batched":
        a, b = torch.randn(3, d, generator=g, dtype=torch.float64), torch.randn(3, d, generator=g, dtype=torch.float64)
    return a.to(dtype), b.to(dtype)


REGIMES = ["typical", "atypical", "near", "antipodal", "batched"]
