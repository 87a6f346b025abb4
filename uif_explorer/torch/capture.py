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
    nothing_prunable,
)
from uif_explorer.torch.macs import as_tuple, count_macs_by_module
from uif_explorer.torch.rules import (
    ParamVal,
    SizeAttr,
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
    warmed_modules: list[str] = field(default_factory=list)  # changed state on a first call
    size_attrs: list[SizeAttr] = field(default_factory=list)  # rewritten in the slim model


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
    warmed = warm_up(work, args)
    with torch.no_grad():
        ep = _export(work, args)
        total_macs, per_module = count_macs_by_module(work, args)
    walker = Walker(work, ep, excluded)
    walker.module_macs = per_module
    walker.run()
    shapes = {n: tuple(p.shape) for n, p in work.named_parameters()}
    buffers = {n: tuple(b.shape) for n, b in work.named_buffers()}
    graph = walker.b.build(shapes, buffers, total_macs, walker.digest)
    graph.keep_one = [p for sa in walker.size_attrs for p in sa.parts]
    check_unknown(graph, walker.unknown_with_weights, _unsupported_message)
    for norm in walker.spanning:
        if not norm.module:
            exclude_classes(graph, norm.classes, "a norm without a module spans channels")
    cap = Capture(graph, walker.spanning, walker.depthwise, walker.custom, sorted(excluded),
                  warmed, walker.size_attrs)
    from uif_explorer.torch.probe import freeze_breaking_groups  # probe imports apply -> here

    freeze_breaking_groups(work, cap, args)
    if warmed:
        graph.notes.append(
            f"Modules that build state on their first call were run once before the capture "
            f"(on a copy): {', '.join(warmed)}"
        )
    if not graph.prunable_groups:
        graph.notes.append(nothing_prunable(graph))
    return cap


def _state(model: nn.Module) -> dict[str, list[tuple[str, object]]]:
    """Per module: its plain attributes (kind, size or value) and buffers (cloned)."""
    out: dict[str, list[tuple[str, object]]] = {}
    for name, m in model.named_modules():
        items: list[tuple[str, object]] = []
        for k, v in vars(m).items():
            if k.startswith("_") or k == "training":
                continue
            if torch.is_tensor(v):
                items.append((k, ("tensor", tuple(v.shape))))
            elif isinstance(v, (list, tuple, dict, set)):
                items.append((k, (type(v).__name__, len(v))))
            elif v is None or isinstance(v, (bool, int, float, str)):
                items.append((k, v))
        items.extend((k, b.detach().clone()) for k, b in m._buffers.items() if b is not None)
        out[name or "(model)"] = items
    return out


def _same(a: list[tuple[str, object]], b: list[tuple[str, object]]) -> bool:
    if [k for k, _ in a] != [k for k, _ in b]:
        return False
    for (_, x), (_, y) in zip(a, b, strict=True):
        if torch.is_tensor(x) or torch.is_tensor(y):
            if not (torch.is_tensor(x) and torch.is_tensor(y) and x.shape == y.shape
                    and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True


def warm_up(work: nn.Module, args: tuple) -> list[str]:
    """Run the (copied) model once so state built on a first call (cached anchors, lazy
    tables) exists before the capture; a model captures the same whether or not it has run.
    The names of the modules whose own state (attributes, buffers) that call changed."""
    before = _state(work)
    try:
        with torch.no_grad():
            work(*args)
    except Exception:  # noqa: BLE001 - export reports a failing forward with its own advice
        return []
    after = _state(work)
    return [n for n in after if n not in before or not _same(before[n], after[n])]


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
