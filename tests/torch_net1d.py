"""An independent PyTorch Net1D, written from ../shared/docs/ECGFOUNDER.md (test-only).

It shares no code with ``ecgd.model``: plain ``nn.Conv1d`` with explicit SAME zero padding,
BatchNorm modules present (so the state dict has the checkpoint's 509 entries) but unused,
as in the 12-lead checkpoint (use_bn False, use_do False).
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SameConv1d(nn.Module):
    """Conv1d preceded by "SAME" zero padding computed from the input length."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        out = math.ceil(n / self.stride)
        pad = max(0, (out - 1) * self.stride + self.kernel - n)
        return self.conv(F.pad(x, (pad // 2, pad - pad // 2)))


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class Block(nn.Module):
    """Residual block: 1x1 -> grouped k-conv -> 1x1, squeeze-excitation, zero-padded shortcut."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, groups_width: int,
                 first: bool) -> None:
        super().__init__()
        self.c_in, self.c_out, self.stride, self.first = c_in, c_out, stride, first
        self.bn1 = nn.BatchNorm1d(c_in)
        self.conv1 = SameConv1d(c_in, c_out, 1, 1)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.conv2 = SameConv1d(c_out, c_out, kernel, stride, groups=c_out // groups_width)
        self.bn3 = nn.BatchNorm1d(c_out)
        self.conv3 = SameConv1d(c_out, c_out, 1, 1)
        self.se_fc1 = nn.Linear(c_out, c_out // 2)
        self.se_fc2 = nn.Linear(c_out // 2, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x if self.first else swish(x)
        a = self.conv1(a)
        a = self.conv2(swish(a))
        a = self.conv3(swish(a))
        s = torch.sigmoid(self.se_fc2(swish(self.se_fc1(a.mean(dim=-1)))))
        a = a * s.unsqueeze(-1)
        shortcut = x
        if self.stride > 1:
            shortcut = F.max_pool1d(F.pad(shortcut, (0, 1)), kernel_size=2, stride=2)
        if self.c_out != self.c_in:
            extra = self.c_out - self.c_in
            shortcut = F.pad(shortcut, (0, 0, extra // 2, extra - extra // 2))
        return a + shortcut


class Stage(nn.Module):
    def __init__(self, c_in: int, c_out: int, m_blocks: int, kernel: int, stride: int,
                 groups_width: int, first_stage: bool) -> None:
        super().__init__()
        self.block_list = nn.ModuleList(
            Block(c_in if i == 0 else c_out, c_out, kernel, stride if i == 0 else 1,
                  groups_width, first_stage and i == 0)
            for i in range(m_blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block_list:
            x = block(x)
        return x


class Net1D(nn.Module):
    """ECGFounder's 12-lead Net1D: [batch, 12, n] -> [batch, 150] logits."""

    def __init__(self, in_channels: int = 12, base_filters: int = 64,
                 filter_list: Sequence[int] = (64, 160, 160, 400, 400, 1024, 1024),
                 m_blocks_list: Sequence[int] = (2, 2, 2, 3, 3, 4, 4), kernel: int = 16,
                 stride: int = 2, groups_width: int = 16, n_classes: int = 150) -> None:
        super().__init__()
        self.first_conv = SameConv1d(in_channels, base_filters, kernel, stride)
        self.first_bn = nn.BatchNorm1d(base_filters)
        stages: List[Stage] = []
        c_in = base_filters
        for i, (c_out, m) in enumerate(zip(filter_list, m_blocks_list)):
            stages.append(Stage(c_in, c_out, m, kernel, stride, groups_width, i == 0))
            c_in = c_out
        self.stage_list = nn.ModuleList(stages)
        self.dense = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = swish(self.first_conv(x))
        for stage in self.stage_list:
            x = stage(x)
        return self.dense(x.mean(dim=-1))
