"""The LeadFL paper's Fashion-MNIST CNN (Zhu, Roos, Chen, ICML 2023), with BatchNorm.

Layer by layer as the authors' code (``fltk/nets/fashion_mnist_cnn.py``, the LeadFL spec
and ``../shared/specs/reference-code-facts.md`` section 3 "Models")::

    Conv(C -> 16, 5x5, pad 2) + BatchNorm + ReLU + MaxPool 2
    Conv(16 -> 32, 5x5, pad 2) + BatchNorm + ReLU + MaxPool 2
    Flatten (7 * 7 * 32 = 1568 on 28x28) -> Linear(1568 -> 10)

**29,034** parameters on 1x28x28 with 10 classes (416 + 32 + 12,832 + 64 + 15,690),
plus the BatchNorm running statistics (96 floats and two counters) as buffers.

BatchNorm statistics: models with buffers train on the engine's sequential path, each
client from the global statistics; after the round the engine combines the clients'
statistics by ``fl.buffers`` (``mean``: all of the round's clients; ``selected``: the
clients the server rule accepted, with its weights, which is what the reference code
does, since it runs the rule on the whole ``state_dict``). The first fully connected
layer is sized by a dummy forward pass, so the model also runs on 8x8 digits.
"""

from __future__ import annotations

import torch
from torch import nn

from ..registry import MODELS
from .paper_cnns import flat_features


@MODELS.register("leadfl-cnn")
class LeadFLCNN(nn.Module):
    """The LeadFL code's FashionMNISTCNN: 2 x (conv 5x5 + BatchNorm + ReLU + max-pool) + 1 FC (29,034 params on 1x28x28)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *, batchnorm: bool = True):
        super().__init__()
        c = input_shape[0]
        norm = (lambda ch: nn.BatchNorm2d(ch)) if batchnorm else (lambda ch: nn.Identity())
        self.features = nn.Sequential(
            nn.Conv2d(c, 16, 5, padding=2),
            norm(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2),
            norm(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = flat_features(self.features, input_shape, "leadfl-cnn", "4x4")
        self.fc = nn.Linear(flat, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
