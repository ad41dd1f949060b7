"""Independent seeded random streams for one run.

One run seed is split (``numpy.random.SeedSequence.spawn``) into streams for the
partition, client sampling, training, the attack, the defense and evaluation. A change
in one part (say, the defense) therefore leaves the others' draws unchanged: runs that
differ only in the defense see the same partition and the same sampled clients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

STREAMS = ("partition", "sampling", "training", "attack", "defense", "evaluation")


@dataclass
class SeedStreams:
    seed: int

    def __post_init__(self):
        children = np.random.SeedSequence(self.seed).spawn(len(STREAMS))
        self._seeds = {name: int(c.generate_state(1, dtype=np.uint64)[0] >> 1) for name, c in zip(STREAMS, children)}

    def seed_of(self, stream: str) -> int:
        return self._seeds[stream]

    def numpy(self, stream: str, *keys: int) -> np.random.Generator:
        """A NumPy generator for ``stream``, optionally keyed (e.g. by round and client)."""
        return np.random.default_rng([self._seeds[stream], *keys])

    def torch(self, stream: str, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(int(self.numpy(stream, *keys).integers(2**62)))
        return g
