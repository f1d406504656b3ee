"""LeNet5 as the original study used it: 32x32 grey input, tanh, average pooling."""

import torch
from torch import nn


class LeNet5(nn.Module):
    """LeNet5 (LeCun et al. 1998) for 1x32x32 inputs; returns logits.

    61,706 parameters for 10 classes. The loss (cross-entropy) is applied
    outside, so the same model serves any criterion.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5), nn.Tanh(), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5), nn.Tanh(), nn.AvgPool2d(2),
            nn.Conv2d(16, 120, kernel_size=5), nn.Tanh(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(120, 84), nn.Tanh(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
