"""hwloop: hardware-in-the-loop training of metaplastic QNNs on multi-level memristor crossbars."""

import os
from importlib.metadata import PackageNotFoundError, version

# torch's OpenMP threads (GNU libgomp) spin for milliseconds after every parallel region by default. Right
# after the backward pass, the spinning thread keeps the second core from the metaplastic step's own thread
# (hwloop.training.fused_cpu), which then runs no faster on two threads than on one (measured: 2.6 ms either
# way; 1.4 ms with a short spin). A short spin, set before torch loads libgomp, leaves plain torch training
# as fast as before (1.56 against 1.62 s per epoch, benchmarks/epoch_vs_torch.py). A value the user sets wins.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

try:
    __version__ = version("hwloop")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+src"

__all__ = ["__version__"]
