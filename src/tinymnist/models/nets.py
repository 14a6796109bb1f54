"""The step networks. Sizes live in config dataclasses; parameter counts are computed, never typed in.

Step 1 (147,658 params): a plain conv stack with no BatchNorm and a dense head. The convolutions are thin
(8-40 channels) so the full-resolution layers stay cheap; 128,200 of the parameters (87%) sit in the
640->200 dense layer over the final 4x4 map, which is exactly where a model like this over-fits.

Steps 2-4 (8,952 params): BatchNorm after every convolution but the classifier, a 1x1 transition before the
single max-pool, and Global Average Pooling then a 1x1 convolution instead of a dense head. Dropout is a
constructor argument (0 in step 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from tinymnist.models.registry import register_model


@dataclass(frozen=True)
class PlainConfig:
    # Two blocks of two valid 3x3 convs, each block closed by a 2x2 max-pool:
    # 28 -> 26 -> 24 -pool-> 12 -> 10 -> 8 -pool-> 4, then a dense head over the 4x4 map.
    block1: tuple[int, ...] = (8, 16)
    block2: tuple[int, ...] = (32, 40)
    hidden: int = 200
    num_classes: int = 10


class PlainNet(nn.Module):
    # `python -m benchmarks.step_variants --model step1` (2 Sapphire Rapids cores, batch 128, fp32): 14.3 ms
    # per training step in channels_last vs 22.0 contiguous. The BatchNorm nets run slower in channels_last
    # (46.9 vs 25.6 ms for step4), so they keep the default layout.
    channels_last = True

    def __init__(self, cfg: PlainConfig = PlainConfig()):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        cin, size = 1, 28
        for block in (cfg.block1, cfg.block2):
            for c in block:
                layers += [nn.Conv2d(cin, c, 3), nn.ReLU(inplace=True)]
                cin, size = c, size - 2
            layers.append(nn.MaxPool2d(2))
            size //= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin * size * size, cfg.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.hidden, cfg.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, 10) logits
        return self.head(self.features(x))


@dataclass(frozen=True)
class GapConfig:
    block1: tuple[int, ...] = (12, 12)  # 3x3 convs at 26 and 24 pixels
    transition: int = 12  # 1x1 conv, then max-pool 24 -> 12
    pooled: tuple[int, ...] = ()  # padded 3x3 convs at 12 pixels, after the pool (none in steps 2-6)
    block2: tuple[int, ...] = (14, 14, 14)  # 3x3 convs at 10, 8 and 6 pixels
    head: int = 16  # padded 3x3 conv at 6 pixels, then GAP and 1x1 to classes
    dropout: float = 0.0
    num_classes: int = 10


def _config(cls, kwargs: dict):
    # Sizes may arrive as JSON lists (recipes, --set); the frozen configs keep tuples.
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})


def _cbr(cin: int, cout: int, k: int, dropout: float, padding: int = 0) -> list[nn.Module]:
    # No conv bias: the BatchNorm shift that follows makes it redundant.
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, padding=padding, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers


class GapNet(nn.Module):
    def __init__(self, cfg: GapConfig = GapConfig()):
        super().__init__()
        self.cfg = cfg
        d = cfg.dropout
        layers: list[nn.Module] = []
        cin = 1
        # Dropout only after the pool: dropout after every conv ended step 4 at 99.37-99.39 on seed 0
        # (reports/experiments.md, s4-dropout-all-layers); after the pool it costs no measurable time
        # (`python -m benchmarks.step_variants`: 25.6 vs 25.8 ms per step without it).
        for c in cfg.block1:
            layers += _cbr(cin, c, 3, 0.0)
            cin = c
        layers += _cbr(cin, cfg.transition, 1, 0.0) + [nn.MaxPool2d(2)]
        cin = cfg.transition
        for c in cfg.pooled:
            layers += _cbr(cin, c, 3, d, padding=1)
            cin = c
        for c in cfg.block2:
            layers += _cbr(cin, c, 3, d)
            cin = c
        layers += _cbr(cin, cfg.head, 3, 0.0, padding=1)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(cfg.head, cfg.num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, 10) logits
        x = self.features(x)  # (B, head, 6, 6)
        x = x.mean(dim=(2, 3), keepdim=True)  # GAP (B, head, 1, 1); deterministic on CUDA
        return self.classifier(x).flatten(1)


# One registry entry per step of the seed table. Steps 3 and 4 are step 2's network with dropout on.
STEP3_DROPOUT = 0.05


@register_model
def step1(**kwargs) -> nn.Module:
    return PlainNet(_config(PlainConfig, kwargs))


@register_model
def step2(**kwargs) -> nn.Module:
    return GapNet(_config(GapConfig, kwargs))


@register_model
def step3(**kwargs) -> nn.Module:
    return GapNet(_config(GapConfig, {"dropout": STEP3_DROPOUT, **kwargs}))


@register_model
def step4(**kwargs) -> nn.Module:
    return step3(**kwargs)


# Beyond the seed (issue 6): the same GapNet family, resized. Chosen from the runs logged in
# reports/experiments.md; each keeps step 3's dropout.
STEP5_TINY = GapConfig(block1=(8, 8), transition=8, block2=(10, 10, 10), head=16, dropout=STEP3_DROPOUT)
STEP6_TOP = GapConfig(block1=(10, 12), transition=12, block2=(14, 16, 16), head=16, dropout=STEP3_DROPOUT)


@register_model
def step5(**kwargs) -> nn.Module:
    return GapNet(_config(GapConfig, {**STEP5_TINY.__dict__, **kwargs}))


@register_model
def step6(**kwargs) -> nn.Module:
    return GapNet(_config(GapConfig, {**STEP6_TOP.__dict__, **kwargs}))


@dataclass(frozen=True)
class BlocksConfig:
    """Blocks of padded 3x3 convs (BatchNorm and ReLU after each) with a max-pool after every block but the
    last, then GAP and a 1x1 conv to the classes: the shape of the smallest public MNIST result at 99.4+
    (3,762 parameters at 4-4-4, 8-8-8, 8-8-8 with biases; adilsammar/woolly-of-cv, issue 21's anchor)."""

    blocks: tuple[tuple[int, ...], ...] = ((4, 4, 4), (8, 8, 8), (8, 8, 8))
    bias: bool = True  # the anchor keeps conv biases, though BatchNorm's shift makes them redundant
    dropout: float = 0.01  # after every conv, as our round-1 replica of the anchor
    dropout_at: str = "conv"  # "block": once after each block but the last (after its pool), as the published one
    num_classes: int = 10


class BlocksNet(nn.Module):
    def __init__(self, cfg: BlocksConfig = BlocksConfig()):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        cin = 1
        for i, block in enumerate(cfg.blocks):
            for c in block:
                layers += [nn.Conv2d(cin, c, 3, padding=1, bias=cfg.bias), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                if cfg.dropout > 0 and cfg.dropout_at == "conv":
                    layers.append(nn.Dropout(cfg.dropout))
                cin = c
            if i < len(cfg.blocks) - 1:
                layers.append(nn.MaxPool2d(2))  # 28 -> 14 -> 7
                if cfg.dropout > 0 and cfg.dropout_at == "block":
                    layers.append(nn.Dropout(cfg.dropout))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(cin, cfg.num_classes, 1, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, 10) logits
        x = self.features(x).mean(dim=(2, 3), keepdim=True)
        return self.classifier(x).flatten(1)


@register_model
def blocks(**kwargs) -> nn.Module:
    kwargs = dict(kwargs)
    if "blocks" in kwargs:  # JSON lists of lists -> the frozen config's tuples
        kwargs["blocks"] = tuple(tuple(b) for b in kwargs["blocks"])
    return BlocksNet(BlocksConfig(**kwargs))
