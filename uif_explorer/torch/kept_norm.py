"""The sparse model's channel-spanning norms, recomputed over the kept channels at the norm call.

A norm's module often does more than the norm: timm's ``LayerNormAct2d`` / ``GroupNormAct``
run ``act(drop(norm(x)))``, torchvision's ``LayerNorm2d`` permutes around it. Replacing the
module's whole output with a recomputed norm would drop the rest (slim != sparse), so while the
module runs a :class:`~torch.overrides.TorchFunctionMode` swaps only its ``layer_norm`` /
``rms_norm`` / ``group_norm`` call for the same call over the kept channels. Written-out norms
(a global response norm, an RMS norm spelled as ``x.pow(2).mean(1)``) make no such call: for
them the module's output is replaced by ``fallback`` (their module is nothing but the norm).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from uif_explorer.torch.capture import SpanningNorm

# per norm kind: the functional call and the axis its channels are on
_CALLS: dict[str, tuple[Callable, int]] = {
    "layer_norm": (F.layer_norm, -1),
    "rms_norm": (F.rms_norm, -1),
    "group_norm": (F.group_norm, 1),
}
# read once: a mode is made for every call of a norm module in the sparse model
_SIGNATURES = {func: inspect.signature(func) for func, _ in _CALLS.values()}


class _KeptNormMode(TorchFunctionMode):
    """Active while a norm's module runs: its norm call normalises the kept channels only
    (pruned ones come out zero, as their masked weights and biases make them)."""

    def __init__(self, norm: SpanningNorm, module: nn.Module, kept: torch.Tensor) -> None:
        super().__init__()
        self.func, self.dim = _CALLS[norm.kind]
        self.sig = _SIGNATURES[self.func]
        self.n, self.kept = len(norm.classes), kept
        self.own = {id(p) for p in module.parameters(recurse=False)}
        self.hits = 0

    def _mine(self, a: dict) -> bool:
        """The module's own norm: its weight is one of the module's parameters, or it has none
        and normalises ``n`` channels (a bare norm module)."""
        x, weight = a["input"], a.get("weight")
        if weight is not None:
            return id(weight) in self.own and x.shape[self.dim] == self.n
        return not self.own and x.shape[self.dim] == self.n

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not self.func:
            return func(*args, **kwargs)
        a = self.sig.bind(*args, **kwargs).arguments
        if not self._mine(a):
            return func(*args, **kwargs)
        self.hits += 1
        x, kept = a["input"], self.kept.to(a["input"].device)
        for key in ("weight", "bias"):
            if a.get(key) is not None:
                a[key] = a[key][kept]
        if "normalized_shape" in a:
            a["normalized_shape"] = (len(kept),)
        a["input"] = x.index_select(self.dim, kept)
        return torch.zeros_like(x).index_copy(self.dim, kept, func(**a))


def run_in_mode(module: nn.Module, make_mode: Callable[[nn.Module], TorchFunctionMode],
                after: Callable | None = None) -> None:
    """Run every call of ``module`` inside ``make_mode(module)``; ``after(module, args, output,
    mode)`` may then replace the output. A stack per thread: one call's mode is left where it
    was entered, nested and concurrent calls alike."""
    local = threading.local()

    def enter(mod: nn.Module, _args: tuple) -> None:
        mode = make_mode(mod)
        local.__dict__.setdefault("modes", []).append(mode)
        mode.__enter__()

    def leave(mod: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        mode = local.modes.pop()
        mode.__exit__(None, None, None)
        return after(mod, args, output, mode) if after is not None else None

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave, always_call=True)


def hook_kept_norm(module: nn.Module, norm: SpanningNorm, buf: str,
                   fallback: Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor]) -> None:
    """Make ``module`` (holding its kept channel index in buffer ``buf``) normalise the kept
    channels only: at its norm call when it makes one, else by ``fallback`` on its output."""
    if norm.kind not in _CALLS:
        module.register_forward_hook(fallback)
        return

    def after(mod: nn.Module, args: tuple, output: torch.Tensor,
              mode: _KeptNormMode) -> torch.Tensor | None:
        return fallback(mod, args, output) if mode.hits == 0 and output is not None else None

    run_in_mode(module, lambda mod: _KeptNormMode(norm, mod, getattr(mod, buf)), after)
