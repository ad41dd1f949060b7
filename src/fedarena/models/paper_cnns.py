"""The two CNNs of the Robust Learning Rate paper (Ozdayi et al., AAAI 2021).

Layer by layer as in the authors' code (``src/models.py``: ``CNN_MNIST``, ``CNN_CIFAR``;
see ``../shared/specs/reference-code-facts.md`` section 1 "Models"). With 10 classes:

* ``fmnist-cnn`` on 1x28x28: **1,199,882** parameters.
* ``cifar-cnn`` on 3x32x32: **537,610** parameters.

Both are built for any input shape (the first fully connected layer is sized by a
dummy forward pass), so they also run on the small bundled data sets; the counts above
hold for the paper's shapes only.

Dropout: the authors' ``CNN_MNIST`` applies ``Dropout2d(0.5)`` to the *flattened*
(N, 9216) activations. On a 2-D input, channel-wise dropout drops single elements, so
it is the same as element-wise ``Dropout(0.5)``, which is what is used here (it also
runs under ``torch.func.vmap``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import MODELS


def flat_features(features: nn.Module, input_shape: tuple[int, ...], name: str, minimum: str) -> int:
    """Output size of ``features`` for one input, or a one-line error if the input is too small."""
    try:
        with torch.no_grad():
            return int(features(torch.zeros(1, *input_shape)).shape[1])
    except RuntimeError:
        raise ConfigError(
            "model.name",
            f"{name} cannot take inputs of shape {tuple(input_shape)}",
            f"inputs of at least {minimum}, or a model such as mlp, cnn, resnet20",
        ) from None


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ConfigError("model.dropout", f"must be in [0, 1) (got {dropout})", "0 <= dropout < 1, paper: 0.5")


@MODELS.register("fmnist-cnn")
class FMNISTCNN(nn.Module):
    """The RLR paper's Fashion-MNIST CNN: 2 conv + max-pool + 2 FC with dropout (1,199,882 params on 1x28x28)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *, dropout: float = 0.5):
        super().__init__()
        _check_dropout(dropout)
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = flat_features(self.features, input_shape, "fmnist-cnn", "6x6")
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(flat, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@MODELS.register("cifar-cnn")
class CIFARCNN(nn.Module):
    """The RLR paper's CIFAR-10 CNN: 3 x (conv + max-pool), 3 FC with dropout (537,610 params on 3x32x32)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *, dropout: float = 0.5):
        super().__init__()
        _check_dropout(dropout)
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(128, 256, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = flat_features(self.features, input_shape, "cifar-cnn", "22x22")
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(flat, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, 256),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
