"""timm patterns of issue 18, attempt 3 (helper C), written out without timm.

- Sequencer's ``LSTM2d``: a channels-last stream reshaped to ``(B*H, W, C)`` rows fed to
  bidirectional ``nn.LSTM`` (``batch_first``), outputs concatenated and projected back. The
  LSTM's input columns follow the stream; its hidden units are a group of their own (exact
  from a zero state), which ``nn.GRU`` / ``nn.RNN`` and stacked layers share; a given initial
  state keeps the hidden size whole. A CPU LSTM (a fused oneDNN kernel) counts the MACs its
  ``meta`` decomposition counts.

Each: slim == sparse on random inputs and the plan's MACs equal PyTorch's FLOP counter.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from slim_checks import group_of, slim_matches_sparse
from torch import nn

from uif_explorer.torch.macs import count_macs, model_cost
from uif_explorer.torch.pruner import ChannelPruner

DIM, HIDDEN = 8, 6


class Rnn2d(nn.Module):
    """timm's ``RNN2dBase`` forward: vertical and horizontal sequences, cat, fc."""

    def __init__(self, rnn: type[nn.RNNBase], **kw) -> None:
        super().__init__()
        self.rnn_v = rnn(DIM, HIDDEN, bidirectional=True, batch_first=True, **kw)
        self.rnn_h = rnn(DIM, HIDDEN, bidirectional=True, batch_first=True, **kw)
        self.fc = nn.Linear(4 * HIDDEN, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        v, _ = self.rnn_v(x.permute(0, 2, 1, 3).reshape(-1, h, c))
        v = v.reshape(b, w, h, -1).permute(0, 2, 1, 3)
        z, _ = self.rnn_h(x.reshape(-1, w, c))
        return self.fc(torch.cat([v, z.reshape(b, h, w, -1)], dim=-1))


class SequencerNet(nn.Module):
    """Conv stem -> channels-last -> residual LSTM2d block + MLP -> pooled head."""

    def __init__(self, rnn: type[nn.RNNBase] = nn.LSTM, **kw) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, DIM, 2, stride=2)
        self.norm = nn.LayerNorm(DIM)
        self.mixer = Rnn2d(rnn, **kw)
        self.mlp = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))
        self.head = nn.Linear(DIM, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).permute(0, 2, 3, 1)
        x = x + self.mixer(self.norm(x))
        x = x + self.mlp(x)
        return self.head(x.mean((1, 2)))


def _hidden(pr: ChannelPruner, module: str):
    (group,) = [g for g in pr.graph.groups if module in g.producers]
    return group


@pytest.mark.parametrize("rnn,kw", [(nn.LSTM, {}), (nn.GRU, {"num_layers": 2}),
                                    (nn.RNN, {"bias": False})])
def test_recurrent_layer_prunes_its_inputs_and_hidden_units(rnn, kw):
    torch.manual_seed(0)
    model, x = SequencerNet(rnn, **kw).eval(), torch.randn(2, 3, 8, 6)
    pr = ChannelPruner(model, x)
    stream, hidden = group_of(pr, "stem"), _hidden(pr, "mixer.rnn_v")
    assert stream.prunable and hidden.prunable, (stream.excluded_reason, hidden.excluded_reason)
    plan = pr.plan({stream.id: 0.5, hidden.id: 0.5, _hidden(pr, "mixer.rnn_h").id: 0.34},
                   channel_divisible=1)
    slim = slim_matches_sparse(x, pr, plan)
    assert (slim.mixer.rnn_v.input_size, slim.mixer.rnn_v.hidden_size) == (DIM // 2, HIDDEN // 2)
    assert slim.mixer.rnn_h.hidden_size == 4
    assert slim.mixer.fc.in_features == 2 * 3 + 2 * 4  # both directions of both
    assert model.mixer.rnn_v.hidden_size == HIDDEN  # the user's model is untouched
    # counted for real on the CPU (a fused oneDNN LSTM kernel) as on meta
    assert model_cost(slim, x).macs == count_macs(slim, x)


class GivenState(nn.Module):
    """An LSTM started from a learned state: a pruned unit's state would not stay 0."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(DIM, DIM)
        self.lstm = nn.LSTM(DIM, HIDDEN, batch_first=True)
        self.h0 = nn.Parameter(torch.randn(1, 1, HIDDEN))
        self.out = nn.Linear(HIDDEN, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = self.h0.expand(1, x.shape[0], HIDDEN).contiguous()
        y, _ = self.lstm(self.fc(x), (h0, torch.zeros_like(h0)))
        return self.out(y[:, -1])


def test_recurrent_layer_from_a_given_state_keeps_its_hidden_size():
    torch.manual_seed(0)
    model, x = GivenState().eval(), torch.randn(2, 5, DIM)
    pr = ChannelPruner(model, x)
    assert "starts from a given state" in _hidden(pr, "lstm").excluded_reason
    plan = pr.plan({group_of(pr, "fc").id: 0.5}, channel_divisible=1)
    slim = slim_matches_sparse(x, pr, plan)
    assert (slim.lstm.input_size, slim.lstm.hidden_size) == (DIM // 2, HIDDEN)


class StdConv(nn.Conv2d):
    """timm's ``StdConv2d`` (``gain=False``) / ``ScaledStdConv2d``: each filter standardised
    over its fan-in by ``F.batch_norm`` on the reshaped weight, times ``gain * scale``."""

    def __init__(self, cin: int, cout: int, k: int, groups: int = 1, gain: bool = True) -> None:
        super().__init__(cin, cout, k, padding=k // 2, groups=groups, bias=gain)
        self.gain = nn.Parameter(1 + 0.1 * torch.randn(cout, 1, 1, 1)) if gain else None
        self.scale, self.eps = self.weight[0].numel() ** -0.5, 1e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        affine = (self.gain * self.scale).view(-1) if self.gain is not None else None
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                              weight=affine, training=True, momentum=0.0, eps=self.eps)
        return F.conv2d(x, weight.reshape_as(self.weight), self.bias, self.stride,
                        self.padding, self.dilation, self.groups)


class NfNet(nn.Module):
    """An NF-RegNet block: pre-activation times beta, 1x1 -> grouped 3x3 -> SE -> 1x1, times
    alpha and a skip-init gain, added to the stream; depthwise too; plain StdConv stem."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = StdConv(3, DIM, 3, gain=False)
        self.conv1, self.conv2 = StdConv(DIM, 16, 1), StdConv(16, 16, 3, groups=4)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 4, 1), nn.ReLU(),
                                nn.Conv2d(4, 16, 1), nn.Sigmoid())
        self.conv3, self.dw = StdConv(16, DIM, 1), StdConv(DIM, DIM, 3, groups=DIM)
        self.skipinit_gain = nn.Parameter(torch.tensor(0.7))
        self.head = nn.Linear(DIM, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        out = F.silu(x) * 0.9
        out = F.gelu(self.conv2(F.gelu(self.conv1(out)) * 1.7))
        out = self.conv3(out * self.se(out) * 2.0)
        x = x + out * 0.2 * self.skipinit_gain
        return self.head(F.silu(self.dw(x)).mean((2, 3)))


def test_weight_standardised_convs_prune_outputs_and_inputs():
    torch.manual_seed(0)
    model, x = NfNet().eval(), torch.randn(2, 3, 8, 8)
    pr = ChannelPruner(model, x)
    groups = [group_of(pr, m) for m in ("stem", "conv1", "conv2")]
    assert all(g.prunable for g in groups), [g.excluded_reason for g in groups]
    assert {n.kind for n in pr.capture.spanning_norms} == {"weight_std"}
    plan = pr.plan({g.id: 0.5 for g in groups}, channel_divisible=1)
    slim = slim_matches_sparse(x, pr, plan)
    assert slim.conv1.weight.shape == (8, DIM // 2, 1, 1) and slim.conv1.gain.shape[0] == 8
    assert slim.conv2.weight.shape == (8, 2, 3, 3) and slim.conv2.out_channels == 8
    assert slim.dw.weight.shape == (DIM // 2, 1, 3, 3)
