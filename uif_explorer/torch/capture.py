"""Capture a PyTorch model with ``torch.export`` and describe its channels to the core.

``torch.export.export(..., strict=False)`` runs the model's Python code on the example input
(so control flow that runs for that input is fine) and yields an ATen graph whose weights are
placeholders named by their module path. :class:`~uif_explorer.torch.walk.Walker` walks that
graph once with the op and layer rules of :mod:`uif_explorer.torch.rules`, handing unions,
slices and MAC ops to :class:`~uif_explorer.core.channels.ChannelGraphBuilder`; this module
turns the result into a :class:`Capture` and checks it.

Unknown parameter-free ops are *barriers*: channels reaching them are excluded from pruning
(with the reason recorded). An unknown op that holds weights and receives prunable channels is
an error naming the module, unless it is excluded or a rule is registered for its type.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from uif_explorer.core.channels import ChannelGraph, Group
from uif_explorer.core.rules import (
    LayerRule,
    UnsupportedLayerError,
    check_unknown,
    exclude_classes,
)
from uif_explorer.torch.macs import as_tuple, count_macs_by_module
from uif_explorer.torch.rules import (
    ParamVal,
    SpanningNorm,
    register_layer,
    register_op,
    unregister_layer,
)
from uif_explorer.torch.walk import Walker


class CaptureError(RuntimeError):
    """The model could not be captured as a graph."""


@dataclass
class Capture:
    """A captured model: the core's channel graph plus torch-side facts for applying plans."""

    graph: ChannelGraph
    spanning_norms: list[SpanningNorm]
    depthwise_modules: set[str]
    custom_modules: dict[str, LayerRule]
    excluded_modules: list[str] = field(default_factory=list)


def _export(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    try:
        return torch.export.export(model, inputs, strict=False)
    except Exception as exc:  # torch raises many types here; report them all the same way
        raise CaptureError(
            f"torch.export could not capture {type(model).__name__}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. Check that the input signature "
            "matches what the model's forward expects (shape, dtype, number of inputs), and "
            "that forward has no data-dependent control flow on tensor values."
        ) from exc


def resolve_excludes(model: nn.Module, excludes: Iterable[object] | None) -> set[str]:
    """Module names from a mix of names and module objects; unknown names are an error."""
    if not excludes:
        return set()
    by_id = {id(m): n for n, m in model.named_modules()}
    names = dict(model.named_modules())
    out = set()
    for e in excludes:
        if isinstance(e, nn.Module):
            if id(e) not in by_id:
                raise ValueError(
                    f"Expected excludes to hold modules of this model. Received a "
                    f"{type(e).__name__} that is not part of it."
                )
            out.add(by_id[id(e)])
        elif isinstance(e, str):
            if e not in names:
                close = difflib.get_close_matches(e, [n for n in names if n], n=3)
                raise ValueError(
                    f"Expected excludes to name modules of the model. Received: {e!r}"
                    + (f"; did you mean one of {close}?" if close else "")
                )
            out.add(e)
        else:
            raise TypeError(f"Expected a module name or module in excludes. Received: {e!r}")
    return out


def capture(
    model: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    excludes: Iterable[object] | None = None,
) -> Capture:
    """Capture ``model`` (not mutated) at ``inputs`` and build its channel graph."""
    args = as_tuple(inputs)
    excluded = resolve_excludes(model, excludes)
    work = copy.deepcopy(model).eval()
    with torch.no_grad():
        ep = _export(work, args)
        total_macs, per_module = count_macs_by_module(work, args)
    walker = Walker(work, ep, excluded)
    walker.module_macs = per_module
    walker.run()
    shapes = {n: tuple(p.shape) for n, p in work.named_parameters()}
    buffers = {n: tuple(b.shape) for n, b in work.named_buffers()}
    graph = walker.b.build(shapes, buffers, total_macs, walker.digest)
    check_unknown(graph, walker.unknown_with_weights, _unsupported_message)
    for norm in walker.spanning:
        if not norm.module:
            exclude_classes(graph, norm.classes, "a norm without a module spans channels")
    cap = Capture(graph, walker.spanning, walker.depthwise, walker.custom, sorted(excluded))
    from uif_explorer.torch.probe import freeze_breaking_groups  # probe imports apply -> here

    freeze_breaking_groups(work, cap, args)
    return cap


def _unsupported_message(op: str, where: str, g: Group) -> str:
    return (
        f"{where}: op '{op}' holds weights and receives the channels of group '{g.name}' "
        f"({g.num_channels} channels), but there is no rule for pruning it. Add '{where}' to "
        "excludes, or register its layer type with uif_explorer.torch.register_layer(...)."
    )


def digest_weights(model: nn.Module) -> str:
    """SHA-256 (16 hex) of the float32 CPU values of the state dict, in key order."""
    import hashlib

    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        if torch.is_tensor(v):
            t = v.detach().to("cpu")
            if t.is_floating_point():
                t = t.float()
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


__all__ = [
    "Capture", "CaptureError", "LayerRule", "ParamVal", "SpanningNorm", "UnsupportedLayerError",
    "capture", "digest_weights", "register_layer", "register_op", "resolve_excludes",
    "unregister_layer",
]
