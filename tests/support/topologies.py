"""Small PyTorch models, one per coupling rule, shared by the engine tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cbr(cin: int, cout: int, k: int = 3, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class Head(nn.Module):
    def __init__(self, cin: int, classes: int = 5) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class ThreeWayAdd(nn.Module):
    """A residual add of three branches (the reference couples only two inputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.a = cbr(16, 16)
        self.b = cbr(16, 16)
        self.mid = cbr(16, 12)
        self.head = Head(16)

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + self.a(x) + self.b(x) - 0.5 * x)


class SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.body = cbr(16, 24)
        self.fc1 = nn.Conv2d(24, 8, 1)
        self.fc2 = nn.Conv2d(8, 24, 1)
        self.head = Head(24)

    def forward(self, x):
        x = self.body(self.stem(x))
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return self.head(x * gate)


class Depthwise(nn.Module):
    """Expansion conv -> depthwise (and a depthwise with channel multiplier 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = cbr(3, 16, 1)
        self.dw = cbr(16, 16, 3, groups=16)
        self.dw2 = nn.Conv2d(16, 32, 3, padding=1, groups=16)
        self.project = nn.Conv2d(32, 12, 1)
        self.head = Head(12)

    def forward(self, x):
        return self.head(self.project(self.dw2(self.dw(self.expand(x)))))


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.grouped = cbr(16, 24, 3, groups=4)
        self.out = cbr(24, 16, 1)
        self.head = Head(16)

    def forward(self, x):
        return self.head(self.out(self.grouped(self.stem(x))))


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.a = cbr(8, 12)
        self.b = cbr(8, 10)
        self.fuse = cbr(30, 16, 1)
        self.head = Head(16)

    def forward(self, x):
        x = self.stem(x)
        return self.head(self.fuse(torch.cat([x, self.a(x), self.b(x)], dim=1)))


class Chunk(nn.Module):
    """chunk along channels: the two halves are pruned alike so the split stays even."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.left = cbr(8, 8)
        self.right = cbr(8, 8)
        self.head = Head(16)

    def forward(self, x):
        a, b = self.stem(x).chunk(2, dim=1)
        return self.head(torch.cat([self.left(a), self.right(b)], dim=1))


class FlattenLinear(nn.Module):
    """VGG-style: flatten -> linear -> linear (hidden units prunable, per spatial position)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(cbr(3, 8), nn.MaxPool2d(2), cbr(8, 16), nn.MaxPool2d(2))
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.act = nn.PReLU(32)
        self.fc2 = nn.Linear(32, 24)
        self.fc3 = nn.Linear(24, 5)

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), -1)
        return self.fc3(F.relu(self.fc2(self.act(self.fc1(x)))))


class Norms(nn.Module):
    """GroupNorm, channels-last LayerNorm and PReLU following convs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.prelu = nn.PReLU(16)
        self.conv2 = nn.Conv2d(16, 12, 3, padding=1)
        self.ln = nn.LayerNorm(12)
        self.head = Head(12)

    def forward(self, x):
        x = self.prelu(self.gn(self.conv1(x)))
        x = self.conv2(x).permute(0, 2, 3, 1)
        x = self.ln(x).permute(0, 3, 1, 2)
        return self.head(x)


class ChannelShuffle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.a = cbr(16, 16, 1, groups=2)
        self.b = cbr(16, 12)
        self.head = Head(12)

    def forward(self, x):
        x = self.a(self.stem(x))
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.head(self.b(x))


class Transposed(nn.Module):
    """ConvTranspose2d between convs (a tiny decoder)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.up = nn.ConvTranspose2d(16, 12, 2, 2)
        self.bn = nn.BatchNorm2d(12)
        self.out = nn.Conv2d(12, 4, 1)

    def forward(self, x):
        return self.out(F.relu(self.bn(self.up(self.down(x)))))


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm1d(16)
        self.c2 = nn.Conv1d(16, 12, 3, padding=1)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = self.c2(F.relu(self.bn(self.c1(x))))
        return self.fc(x.mean(-1))


class Conv3dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv3d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm3d(8)
        self.c2 = nn.Conv3d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = self.c2(F.relu(self.bn(self.c1(x))))
        return self.fc(x.mean(dim=(2, 3, 4)))


class SharedAndControlFlow(nn.Module):
    """A module called twice, Python control flow on shapes, and a learned layer scale."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.shared = cbr(16, 16)
        self.scale = nn.Parameter(torch.full((16, 1, 1), 0.5))
        self.head = Head(16)

    def forward(self, x):
        x = self.stem(x)
        if x.shape[-1] > 4:  # runs for the example input only; export specialises it
            x = x + self.shared(x)
        x = x + self.scale * self.shared(x)
        return self.head(x)


class MLP(nn.Module):
    """Token MLP: linear -> GELU -> linear on the last dim."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.out(x.mean(1))


IMAGE = (2, 3, 16, 16)
TOPOLOGIES: dict[str, tuple[type[nn.Module], tuple[int, ...]]] = {
    "three_way_add": (ThreeWayAdd, IMAGE),
    "squeeze_excite": (SqueezeExcite, IMAGE),
    "depthwise": (Depthwise, IMAGE),
    "grouped": (Grouped, IMAGE),
    "concat": (Concat, IMAGE),
    "chunk": (Chunk, IMAGE),
    "flatten_linear": (FlattenLinear, IMAGE),
    "norms": (Norms, IMAGE),
    "channel_shuffle": (ChannelShuffle, IMAGE),
    "transposed": (Transposed, IMAGE),
    "conv1d": (Conv1dNet, (2, 3, 20)),
    "conv3d": (Conv3dNet, (2, 3, 6, 8, 8)),
    "shared_control_flow": (SharedAndControlFlow, IMAGE),
    "mlp": (MLP, (2, 7, 8)),
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A model with non-trivial BN statistics (so eval-mode outputs are not degenerate)."""
    cls, shape = TOPOLOGIES[name]
    torch.manual_seed(seed)
    model = cls()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, (nn.GroupNorm, nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval(), torch.randn(*shape)


class ConcatDepthwise(nn.Module):
    """Concat followed by a depthwise conv: each concat input is still pruned on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 8)
        self.b = cbr(3, 12)
        self.dw = cbr(20, 20, 3, groups=20)
        self.project = cbr(20, 16, 1)
        self.head = Head(16)

    def forward(self, x):
        return self.head(self.project(self.dw(torch.cat([self.a(x), self.b(x)], dim=1))))


TOPOLOGIES["concat_depthwise"] = (ConcatDepthwise, IMAGE)


class TokenAttention(nn.Module):
    """A ViT-style block on patch tokens, single-head attention on 3-D q, k, v (B, N, C).

    ``fused``: ``F.scaled_dot_product_attention`` with an explicit scale (so query/key width
    can be pruned); else the explicit ``softmax(q @ k^T * scale) @ v`` matmuls.
    """

    def __init__(self, fused: bool = True, dim: int = 16, hidden: int = 24) -> None:
        super().__init__()
        self.fused = fused
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, 12)
        self.k = nn.Linear(dim, 12)
        self.v = nn.Linear(dim, 20)
        self.proj = nn.Linear(20, dim)
        self.scale = 12 ** -0.5
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.head = nn.Linear(dim, 5)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.fused:
            return F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1) @ v

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = x + self.proj(self.attend(self.norm1(x)))
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return self.head(x.mean(1))


class HeadsAttention(nn.Module):
    """Multi-head fused attention as timm and torchvision write it: qkv split into heads by a
    reshape, the default scale. Whole heads, the MLP and the residual stream can be pruned;
    the head width is fixed by the default scale."""

    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fc1 = nn.Linear(dim, 32)
        self.fc2 = nn.Linear(32, dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        x = x + self.proj(a)
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.head(x.mean(1))


ATTENTION: dict[str, tuple[type[nn.Module] | object, tuple[int, ...]]] = {
    "fused_attention": (lambda: TokenAttention(fused=True), IMAGE),
    "matmul_attention": (lambda: TokenAttention(fused=False), IMAGE),
    "heads_attention": (HeadsAttention, IMAGE),
}
TOPOLOGIES.update(ATTENTION)
