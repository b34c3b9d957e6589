import os

# Tests never talk to W&B unless a test turns it on; no update checks.
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# The preprocessing cache of every test run lives in its own folder, never in the user's ~/.cache.
if "LIGHTNING_CV_CACHE" not in os.environ:
    import tempfile

    os.environ["LIGHTNING_CV_CACHE"] = tempfile.mkdtemp(prefix="lightning-cv-cache-")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One process per core under `pytest -n`: more threads per process only contend.
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # for the subprocesses tests start
else:
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A session-wide folder for generated datasets (generated once, read by many tests)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def mnist_dir(data_root):
    """The offline MNIST demo (sklearn digits as IDX files), for tests that run real training processes."""
    from lightning_cv.data.demos import make_mnist

    make_mnist(data_root / "mnist-rel")
    return data_root / "mnist-rel"
