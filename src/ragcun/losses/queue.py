"""A feature queue: the most recent detached embeddings, for a SIGReg test at more than batch scale."""

from __future__ import annotations

import torch
from torch import nn

from ragcun.distributed import world_size


class FeatureQueue(nn.Module):
    """A first-in, first-out memory bank of ``size`` detached embeddings (global across ranks).

    Under DDP each rank keeps ``size // world_size`` rows of its own batches, and SIGReg sums the
    characteristic function over ranks, so the test sees one global queue of ``size`` rows (the same
    statistic as one process holding the whole queue) without gathering any embeddings. The rows are
    buffers (saved with the loss state, so a resumed run continues with the same queue).

    Why it helps, and where it does not: the SIGReg statistic's power grows with the sample, so a batch
    of 16–256 passes where a corpus fails; testing the batch together with the queue sees the corpus-scale
    deviation, and each batch row's gradient points against it. The queue holds *the batch's* documents,
    though — positives and hard negatives, drawn by how often they are relevant, not uniformly from the
    corpus — and embeddings from older parameters: see docs/isotropy.md for what it measured.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"the queue size must be >= 1, got {size}")
        self.size = int(size)
        self.register_buffer("rows", torch.zeros(0, 0))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("head", torch.zeros((), dtype=torch.long))

    @property
    def capacity(self) -> int:
        """This rank's share of the global size."""
        return max(1, self.size // world_size())

    def contents(self) -> torch.Tensor:
        return self.rows[: int(self.filled)]

    @torch.no_grad()
    def push(self, x: torch.Tensor) -> None:
        """Add the rows of ``x`` (N, D), detached, dropping the oldest beyond capacity."""
        x = x.detach().float()
        cap = self.capacity
        if self.rows.shape != (cap, x.shape[1]):
            if int(self.filled):
                raise ValueError(f"queue of width {self.rows.shape[1]} cannot take rows of width "
                                 f"{x.shape[1]}")
            self.rows = torch.zeros(cap, x.shape[1], device=x.device)
        x = x[-cap:]
        idx = (int(self.head) + torch.arange(x.shape[0], device=x.device)) % cap
        self.rows[idx] = x.to(self.rows.device)
        self.head.fill_((int(self.head) + x.shape[0]) % cap)
        self.filled.fill_(min(cap, int(self.filled) + x.shape[0]))

    def extra_repr(self) -> str:
        return f"size={self.size}, filled={int(self.filled)}"
