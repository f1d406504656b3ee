"""LeNet5 as the original study used it: 32x32 grey input, tanh, average pooling, logits out.

``LeNet5.forward`` reads as LeNet5: every layer called as written, conv1 to
fc2, so module hooks (BackPACK, curvlinops' KFAC, Cockpit) see all five.
Beside it sits ``fast_forward``, the same function through cheaper CPU
operations. The model takes that path by itself only where it is exactly the
same function: tanh, 1x32x32 input, and no module hook registered anywhere
in the model or globally; otherwise it steps aside. ``LeNet5(fast=False)``
turns it off. Tests hold logits, gradients and a Hessian-vector product of
the two paths together, and benchmarks/bench_training.py times them.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


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

    conv(1->6, 5x5) act avgpool, conv(6->16, 5x5) act avgpool,
    conv(16->120, 5x5) act, linear(120->84) act, linear(84->classes):
    61,706 parameters for 10 classes. The loss (cross-entropy) is applied
    outside, so the same model serves any criterion.
    """

    def __init__(self, num_classes: int = 10, activation: str = "tanh", fast: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid choices: {', '.join(ACTIVATIONS)}")
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.conv3 = nn.Conv2d(16, 120, kernel_size=5)
        self.fc1 = nn.Linear(120, 84)
        self.fc2 = nn.Linear(84, num_classes)
        self.act = ACTIVATIONS[activation]()
        self.pool = nn.AvgPool2d(2)
        self.activation = activation
        # The cheaper computation holds for tanh only (it rests on tanh(z) = 2 sigmoid(2z) - 1).
        self.fast = fast and activation == "tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3:] != (1, 32, 32):
            raise ValueError(f"LeNet5 takes images of shape (N, 1, 32, 32); got {tuple(x.shape)}")
        if self.fast and not self.hooked():
            return fast_forward(self, x)
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = self.act(self.conv3(x)).flatten(1)
        x = self.act(self.fc1(x))
        return self.fc2(x)

    def hooked(self) -> bool:
        """Whether any module hook could watch this forward: then only the plain path will do."""
        if _module._global_forward_hooks or _module._global_forward_pre_hooks or _module._global_backward_hooks \
                or _module._global_backward_pre_hooks:
            return True
        return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                   for m in self.modules())


def fast_forward(model: LeNet5, x: torch.Tensor) -> torch.Tensor:
    """``model``'s function (tanh) through cheaper CPU operations; float32 rounding apart, ``forward``'s plain path.

    The first block through ``conv_tanh_pool_phases``, the second through
    ``tanh_avg_pool2``, and the third convolution, whose 5x5 kernel covers the
    whole 5x5 map it sees, as one matrix product over the 400 flattened inputs
    (it keeps its Conv2d parameters). Together they make a CPU training step
    markedly cheaper (benchmarks/README.md). Layers are not called as modules
    here, which is why ``forward`` steps aside when hooks are registered.
    """
    x = conv_tanh_pool_phases(x, model.conv1)
    x = tanh_avg_pool2(model.conv2(x))
    x = torch.tanh(F.linear(x.flatten(1), model.conv3.weight.flatten(1), model.conv3.bias))
    return model.fc2(torch.tanh(model.fc1(x)))
