"""GPU-only tests (fused kernels, packing on CUDA): collected only where CUDA is present, so a
CPU run neither imports nor reports them (they are not skipped: they do not exist there)."""
import torch

collect_ignore_glob = [] if torch.cuda.is_available() else ["test_*.py"]
