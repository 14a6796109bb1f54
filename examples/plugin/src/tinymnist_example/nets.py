"""A depthwise-separable CNN: each 3x3 conv is a per-channel 3x3 and a 1x1 mix, so width costs little."""

import torch
import torch.nn as nn


def _sep(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class SepNet(nn.Module):
    def __init__(self, width: int = 16, dropout: float = 0.05):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1, bias=False),  # 28x28
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            *_sep(w, w),
            nn.MaxPool2d(2),  # 14x14
            nn.Dropout(dropout),
            *_sep(w, 2 * w),
            *_sep(2 * w, 2 * w),
            nn.MaxPool2d(2),  # 7x7
            *_sep(2 * w, 2 * w),
        )
        self.classifier = nn.Conv2d(2 * w, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, 10)
        x = self.features(x).mean(dim=(2, 3), keepdim=True)
        return self.classifier(x).flatten(1)


def build(width: int = 16, dropout: float = 0.05) -> nn.Module:
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    return SepNet(width, dropout)
