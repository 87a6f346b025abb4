"""Apply a pruning plan to a PyTorch model: sparse (masked) or slim (physically smaller).

Both start from a deep copy; the user's model is never touched. Every pruned tensor is
described by one boolean mask of its own shape, so the sparse model zeroes ``t[~mask]`` and
the slim model keeps ``t[mask]`` reshaped: one mechanism, hence slim == sparse by design.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from uif_explorer.core.plan import PruningPlan
from uif_explorer.torch.capture import Capture, SpanningNorm
from uif_explorer.torch.kept_norm import hook_kept_norm
from uif_explorer.torch.kept_std import hook_kept_std
from uif_explorer.torch.rules import update_module

MASK_SUFFIX = "_uif_mask"


def _keep_by_slice(cap: Capture, plan: PruningPlan) -> dict[str, list]:
    removed = plan.removed_roots(cap.graph)
    out: dict[str, dict[int, tuple[np.ndarray, int]]] = {}
    for sl in cap.graph.slices:
        keep = ~removed[cap.graph.uf.roots(sl.classes)]
        out.setdefault(sl.param, {})[sl.dim] = (keep, sl.blocks)
    return {k: sorted(v.items()) for k, v in out.items()}


def tensor_masks(cap: Capture, plan: PruningPlan) -> dict[str, tuple[torch.Tensor, tuple]]:
    """Per pruned tensor: (bool mask of its full shape, its slim shape)."""
    result = {}
    for name, dims in _keep_by_slice(cap, plan).items():
        shape = cap.graph.param_shapes.get(name) or cap.graph.buffer_shapes[name]
        mask = np.ones(shape, dtype=bool)
        slim = list(shape)
        for dim, (keep, blocks) in dims:
            if blocks > 1:  # grouped conv input axis: row block b reads its own inputs
                rows, per = shape[0], shape[dim]
                block_keep = keep.reshape(blocks, per)
                rows_per = rows // blocks
                grid = np.repeat(block_keep, rows_per, axis=0)  # (rows, per)
                view = [1] * len(shape)
                view[0], view[dim] = rows, per
                mask &= grid.reshape(view)
                slim[dim] = int(block_keep[0].sum())
            else:
                view = [1] * len(shape)
                view[dim] = shape[dim]
                mask &= keep.reshape(view)
                slim[dim] = int(keep.sum())
        if not mask.all():
            result[name] = (torch.from_numpy(mask), tuple(slim))
    return result


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    mod_name, _, attr = name.rpartition(".")
    return (model.get_submodule(mod_name) if mod_name else model), attr


def _kept_index(cap: Capture, plan: PruningPlan, classes: np.ndarray) -> torch.Tensor:
    removed = plan.removed_roots(cap.graph)
    keep = ~removed[cap.graph.uf.roots(classes)]
    return torch.from_numpy(np.flatnonzero(keep))


# -- sparse ----------------------------------------------------------------------------------
def _mask_grad_hook(owner: nn.Module, buf: str):
    def hook(param: torch.Tensor) -> None:
        if param.grad is not None:
            param.grad.mul_(getattr(owner, buf))

    return hook


def _masked_norm_hook(norm: SpanningNorm, buf: str):
    """Recompute a channel-spanning norm over the kept channels only (slim == sparse)."""

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        kept = getattr(module, buf)
        n = len(norm.classes)
        w = getattr(module, "weight", None)
        b = getattr(module, "bias", None)
        wk = w[kept] if w is not None else None
        bk = b[kept] if b is not None else None
        if norm.kind == "group_norm":
            y = torch.zeros_like(output)
            y[:, kept] = F.group_norm(x[:, kept], norm.num_groups, wk, bk, norm.eps)
            return y
        if norm.kind == "grn":  # global response norm: L2 over space, mean over channels
            d, shape = norm.dim, [1] * x.ndim
            shape[d] = len(kept)
            xs = x.index_select(d, kept.to(x.device))
            g = xs.norm(p=2, dim=[i for i in range(1, x.ndim) if i != d], keepdim=True)
            ys = xs + torch.addcmul(bk.view(shape), wk.view(shape),
                                    xs * (g / (g.mean(d, keepdim=True) + norm.eps)))
            return torch.zeros_like(output).index_copy(d, kept.to(x.device), ys)
        if x.shape[-1] == n and norm.dim in (-1, x.ndim - 1):
            y = torch.zeros_like(output)
            y[..., kept] = _tail(module, norm, _last_dim_norm(norm, x[..., kept], wk, bk))
            return y
        # channels-first LayerNorm (e.g. torchvision's LayerNorm2d): normalise over dim 1
        ys = _last_dim_norm(norm, x[:, kept].movedim(1, -1), wk, bk).movedim(-1, 1)
        y = torch.zeros_like(output)
        y[:, kept] = _tail(module, norm, ys)
        return y

    return hook


def _tail(module: nn.Module, norm: SpanningNorm, y: torch.Tensor) -> torch.Tensor:
    """The element-wise children a norm-act module runs after its norm (timm's RmsNormAct2d:
    drop, act), redone on the recomputed kept channels."""
    for name in norm.tail:
        y = module.get_submodule(name)(y)
    return y


def _last_dim_norm(norm: SpanningNorm, x: torch.Tensor, w: torch.Tensor | None,
                   b: torch.Tensor | None) -> torch.Tensor:
    """The layer or RMS norm ``norm`` records, over the last dim of ``x`` (the kept ones)."""
    if norm.kind == "rms_norm":
        return F.rms_norm(x, (x.shape[-1],), w, norm.eps)
    return F.layer_norm(x, (x.shape[-1],), w, b, norm.eps)


def apply_masks(model: nn.Module) -> None:
    """Zero every pruned entry again (after loading weights or a custom update rule)."""
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            owner, attr = _owner(model, name)
            mask = getattr(owner, attr + MASK_SUFFIX, None) if not attr.endswith(
                MASK_SUFFIX) else None
            if mask is not None:
                t.mul_(mask.to(t.dtype))


def make_sparse(model: nn.Module, cap: Capture, plan: PruningPlan) -> nn.Module:
    """A copy with pruned channels zeroed that stay zero through any optimizer step.

    Masks are non-persistent buffers (not in ``state_dict()``, so keys and shapes are the
    original ones); a gradient hook zeroes the pruned gradient entries after accumulation, so
    SGD (momentum, weight decay), Adam and AdamW never move them off zero; in training mode a
    forward pre-hook re-applies the masks as a second line of defence.
    """
    sparse = copy.deepcopy(model)
    params = dict(sparse.named_parameters())
    masks = tensor_masks(cap, plan)
    with torch.no_grad():
        for name, (mask, _) in masks.items():
            owner, attr = _owner(sparse, name)
            t = getattr(owner, attr)
            buf = attr + MASK_SUFFIX
            owner.register_buffer(buf, mask.to(device=t.device, dtype=t.dtype), persistent=False)
            t.mul_(getattr(owner, buf))
            if name in params and params[name].requires_grad:
                params[name].register_post_accumulate_grad_hook(_mask_grad_hook(owner, buf))
    for norm in cap.spanning_norms:
        kept = _kept_index(cap, plan, norm.classes)
        if len(kept) == len(norm.classes) or not norm.module:
            continue
        module = sparse.get_submodule(norm.module)
        if norm.kind == "weight_std":  # a weight-standardised conv's pruned fan-in
            hook_kept_std(module, norm, kept)
            continue
        buf = "kept" + MASK_SUFFIX
        module.register_buffer(buf, kept, persistent=False)
        hook_kept_norm(module, norm, buf, _masked_norm_hook(norm, buf))

    def remask(module: nn.Module, _args: tuple) -> None:
        if module.training:
            apply_masks(module)

    sparse.register_forward_pre_hook(remask)
    sparse.uif_plan = plan  # type: ignore[attr-defined]
    sparse.uif_capture = cap  # type: ignore[attr-defined]
    _bind(sparse, "slim_state_dict", slim_state_dict)
    return sparse


def _bind(model: nn.Module, name: str, fn) -> None:
    model.__dict__[name] = fn.__get__(model)


def slim_state_dict(sparse: nn.Module) -> dict[str, torch.Tensor]:
    """The sparse model's state dict with pruned channels dropped (loads into the slim model)."""
    masks = tensor_masks(sparse.uif_capture, sparse.uif_plan)
    return _slice_state(sparse.state_dict(), masks)


def _slice_state(state: Mapping[str, torch.Tensor], masks) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if k in masks:
            mask, shape = masks[k]
            out[k] = v[mask.to(v.device)].reshape(shape).clone()
        else:
            out[k] = v
    return out


# -- slim ------------------------------------------------------------------------------------
def _rewrite_sizes(slim: nn.Module, cap: Capture, plan: PruningPlan) -> None:
    """Size lists the model's code reads (split sizes) get the kept count of each part;
    a single count (``num_heads``, ``head_dim``) gets the kept count of its one part."""
    if not cap.size_attrs:
        return
    removed = plan.removed_roots(cap.graph)
    for sa in cap.size_attrs:
        module = slim.get_submodule(sa.module) if sa.module else slim
        old = getattr(module, sa.attr)
        kept = [int(len(p) - removed[cap.graph.uf.roots(p)].sum()) for p in sa.parts]
        setattr(module, sa.attr, kept[0] if isinstance(old, int) else type(old)(kept))


def make_slim(model: nn.Module, cap: Capture, plan: PruningPlan) -> nn.Module:
    """A copy whose pruned layers are physically smaller (same code, fewer channels)."""
    slim = copy.deepcopy(model)
    masks = tensor_masks(cap, plan)
    params = dict(slim.named_parameters())
    touched: set[str] = set()
    with torch.no_grad():
        for name, (mask, shape) in masks.items():
            owner, attr = _owner(slim, name)
            old = getattr(owner, attr)
            new = (torch.empty(shape, dtype=old.dtype, device="meta") if old.is_meta  # probe
                   else old[mask.to(old.device)].reshape(shape).clone())
            if name in params:
                setattr(owner, attr, nn.Parameter(new, requires_grad=old.requires_grad))
            else:
                owner._buffers[attr] = new
            touched.add(name.rpartition(".")[0])
    for mod_name in touched:
        update_module(slim.get_submodule(mod_name) if mod_name else slim, mod_name, cap)
    _rewrite_sizes(slim, cap, plan)
    slim.uif_plan = plan  # type: ignore[attr-defined]
    slim.uif_capture = cap  # type: ignore[attr-defined]
    _bind(slim, "sparse_state_dict", sparse_state_dict)
    return slim


def sparse_state_dict(slim: nn.Module) -> dict[str, torch.Tensor]:
    """The slim model's state dict scattered back to the original shapes (zeros elsewhere)."""
    masks = tensor_masks(slim.uif_capture, slim.uif_plan)
    out = {}
    for k, v in slim.state_dict().items():
        if k in masks:
            mask, _ = masks[k]
            full = torch.zeros(mask.shape, dtype=v.dtype, device=v.device)
            full[mask.to(v.device)] = v.reshape(-1)
            out[k] = full
        else:
            out[k] = v
    return out
