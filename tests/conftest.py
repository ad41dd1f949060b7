import os
from pathlib import Path

# OpenMP threads that spin while waiting make small tensor ops crawl on a busy 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` when present (developer machines); tests using it skip elsewhere."""
    if not (SHARED_DATA / "fashion-mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("../shared/data not present")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: small models train faster and do not fight other jobs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
