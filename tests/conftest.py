import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _latency_cache(tmp_path_factory, monkeypatch):
    """Latency tables go to a per-session temporary cache, never the user's ~/.cache."""
    if "SECATEURS_CACHE" not in os.environ:
        monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def one_thread():
    """Tiny models run far faster on one thread than on two contending ones; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
