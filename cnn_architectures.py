"""LeNet5 as the original study used it: 32x32 grey input, tanh, average pooling.

``LeNet5.forward`` computes the original network's function with cheaper
operations; ``reference_forward`` computes it layer by layer the way the
original did. Tests hold the two to float32 rounding of each other, and
benchmarks/bench_training.py times them side by side.
"""

import torch
import torch.nn.functional as F
from torch import nn


def avg_pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling with stride 2 (even height and width), as two strided sums.

    Equal to ``F.avg_pool2d(x, 2)`` up to rounding; on CPU its forward and
    backward together are faster than avg_pool2d's kernels for LeNet5's maps.
    """
    x = x[..., 0::2] + x[..., 1::2]
    return (x[..., 0::2, :] + x[..., 1::2, :]) * 0.25


def phase_frames(weight: torch.Tensor) -> torch.Tensor:
    """A 5x5 kernel (O, C, 5, 5) as four shifted copies in 6x6 frames: (4*O, C, 6, 6).

    Output channel ``4*o + 2*p + q`` is kernel ``o`` placed at offset (p, q) in
    the frame. A stride-2 convolution with these frames computes, in channel
    ``4*o + 2*p + q`` at pixel (i, j), the original stride-1 convolution's
    channel ``o`` at pixel (2i + p, 2j + q): the four pixels of each 2x2
    pooling window come out as four channels.
    """
    out_ch, in_ch = weight.shape[:2]
    frames = [F.pad(weight, (q, 1 - q, p, 1 - p)) for p in (0, 1) for q in (0, 1)]  # 4 x (O, C, 6, 6)
    return torch.stack(frames, 1).reshape(4 * out_ch, in_ch, 6, 6)


def conv_tanh_pool_phases(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``avg_pool2d(tanh(conv(x)), 2)`` for a 5x5 convolution, with the pooling windows as channels.

    One stride-2 convolution with ``phase_frames`` puts the four pixels of each
    pooling window in four channels, so pooling is a sum over them.
    tanh(z) = 2 sigmoid(2z) - 1, with the factor 2 folded into the kernel and
    the affine step moved after the pooling. On CPU this is much cheaper than
    the direct form for LeNet5's first layer (one input channel, a 28x28 map):
    the pre-pooling map is never sliced, and the sigmoid runs on a view that
    its backward can fill without a copy.
    """
    z = F.conv2d(x, phase_frames(2 * conv.weight), (2 * conv.bias).repeat_interleave(4), stride=2)
    n, _, h, w = z.shape
    return torch.sigmoid(z.view(n, -1, 4, h, w)).sum(2) * 0.5 - 1  # 2 * mean - 1


def tanh_avg_pool2(x: torch.Tensor) -> torch.Tensor:
    """``avg_pool2d(tanh(x), 2)``, computed as ``2 * avg_pool2(sigmoid(2x)) - 1``.

    tanh(x) = 2 sigmoid(2x) - 1 and pooling is linear, so the affine step moves
    after the pooling, onto a map a quarter the size. torch's float32 sigmoid is
    several times cheaper than its tanh on CPU.
    """
    return avg_pool2(torch.sigmoid(2 * x)) * 2 - 1


class LeNet5(nn.Module):
    """LeNet5 (LeCun et al. 1998) for 1x32x32 inputs; returns logits.

    conv(1->6, 5x5) tanh avgpool, conv(6->16, 5x5) tanh avgpool,
    conv(16->120, 5x5) tanh, linear(120->84) tanh, linear(84->classes):
    61,706 parameters for 10 classes. The loss (cross-entropy) is applied
    outside, so the same model serves any criterion.

    ``forward`` computes the same function as the layer-by-layer form
    (``reference_forward``) with cheaper operations: the first block through
    ``conv_tanh_pool_phases``, the second through ``tanh_avg_pool2``, and the third
    convolution, whose 5x5 kernel covers the whole 5x5 map it sees, as one
    matrix product over the 400 flattened inputs (it keeps its Conv2d
    parameters). Together they make a CPU training step markedly cheaper
    (benchmarks/bench_training.py); the numbers differ from the direct form's
    by float32 rounding only.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.conv3 = nn.Conv2d(16, 120, kernel_size=5)
        self.fc1 = nn.Linear(120, 84)
        self.fc2 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3:] != (1, 32, 32):
            raise ValueError(f"LeNet5 takes images of shape (N, 1, 32, 32); got {tuple(x.shape)}")
        x = conv_tanh_pool_phases(x, self.conv1)
        x = tanh_avg_pool2(self.conv2(x))
        x = torch.tanh(F.linear(x.flatten(1), self.conv3.weight.flatten(1), self.conv3.bias))
        return self.fc2(torch.tanh(self.fc1(x)))


def reference_forward(model: LeNet5, x: torch.Tensor) -> torch.Tensor:
    """The original's computation of ``model``'s function: each layer as written, conv3 as a convolution."""
    x = F.avg_pool2d(torch.tanh(model.conv1(x)), 2)
    x = F.avg_pool2d(torch.tanh(model.conv2(x)), 2)
    x = torch.tanh(model.conv3(x)).flatten(1)
    return model.fc2(torch.tanh(model.fc1(x)))
