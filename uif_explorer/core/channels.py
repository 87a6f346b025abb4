"""Channel classes, coupling and groups: the framework-neutral heart of pruning.

A backend walks its captured graph and describes, for every tensor, which *channel class*
each position of it carries (an integer array broadcastable to the tensor's shape). Producers
(convolutions, linears) create fresh classes; element-wise ops *unify* the classes of their
operands (residual adds, squeeze-excitation gates); concatenation and flattening only rearrange
them. Weights are tied to classes through :class:`ParamSlice` records ("dimension 1 of
``layer2.conv.weight`` follows these classes").

After the walk, every union-find root is one prunable channel. A :class:`Group` is a connected
set of producer spaces (a conv and everything added to it); it is the unit that gets a ratio,
an importance ranking and a sensitivity curve. Nothing here imports torch or TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from uif_explorer.core.factors import Factors, product_terms, resolve_factors

FIXED_OUTPUT = "feeds a model output"
FIXED_INPUT = "is a model input"
FACTORED = "its channels are attention heads x head width (pruned through those two groups)"


class UnionFind:
    """Union-find over dense integer ids that grows on demand."""

    def __init__(self) -> None:
        self.parent = np.zeros(0, dtype=np.int64)
        self._root_of: np.ndarray | None = None  # set by freeze(): vectorised lookups

    def grow(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent = np.concatenate([self.parent, np.arange(start, start + n, dtype=np.int64)])
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # Keep the smaller id as root so roots follow creation (graph) order.
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            self.parent[hi] = lo

    def freeze(self) -> None:
        """No more unions: compute every id's root once so lookups are array indexing."""
        self._root_of = np.fromiter(
            (self.find(i) for i in range(len(self.parent))), np.int64, len(self.parent)
        )

    def roots(self, ids: np.ndarray) -> np.ndarray:
        if self._root_of is not None:
            return self._root_of[np.asarray(ids, dtype=np.int64)]
        ids = np.asarray(ids)
        return np.fromiter((self.find(int(i)) for i in ids.ravel()), np.int64, ids.size).reshape(
            ids.shape
        )


@dataclass
class ParamSlice:
    """One axis of one weight/buffer tensor follows a list of channel classes.

    ``classes`` has one entry per position along ``dim``. For the input axis of a grouped
    convolution (``blocks`` > 1) the axis holds in-group positions: ``classes`` then covers all
    input channels and row block ``b`` (along axis 0, ``rows_per_block`` rows each) reads
    ``classes[b * size : (b + 1) * size]``.
    """

    param: str
    dim: int
    classes: np.ndarray
    blocks: int = 1
    role: str = "out"  # "out" (produces the channels), "in" (consumes them), "norm", "other"


@dataclass
class MacOp:
    """A counted op whose MACs scale with kept channels: ``factor * in_pg * out``.

    ``in_classes`` is the contracted axis (``None`` when it cannot change), ``out_classes`` the
    produced axis. ``depthwise`` ops scale with the output only; ``groups`` > 1 divides the
    kept inputs evenly (they are pruned evenly per conv group).
    """

    name: str
    full_macs: int
    in_classes: np.ndarray | None
    out_classes: np.ndarray | None
    groups: int = 1
    depthwise: bool = False


@dataclass
class Group:
    """A set of coupled producer spaces pruned together: the unit of ratios and sensitivity."""

    id: int
    modules: list[str]
    roots: np.ndarray  # canonical channel order (by the leading producer's output order)
    blocks: int = 1
    excluded_reason: str | None = None
    fix_reasons: list[str] = field(default_factory=list)
    producers: list[str] = field(default_factory=list)  # layers that create the channels

    @property
    def num_channels(self) -> int:
        return int(len(self.roots))

    @property
    def prunable(self) -> bool:
        return self.excluded_reason is None

    @property
    def name(self) -> str:
        return self.modules[0] if self.modules else f"group{self.id}"


@dataclass
class ChannelGraph:
    """Result of a backend's walk: classes resolved into roots, groups and costs."""

    uf: UnionFind
    slices: list[ParamSlice]
    mac_ops: list[MacOp]
    groups: list[Group]
    root_group: dict[int, int]
    param_shapes: dict[str, tuple[int, ...]]  # parameters (counted as params)
    buffer_shapes: dict[str, tuple[int, ...]]  # buffers (sliced, not counted)
    other_macs: int  # counted MACs the plan can never change
    digest_items: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # (composite, head, width) roots: a composite channel goes when its head or width goes
    factors: Factors | None = None
    # class arrays that must each keep a channel (split chunks whose size the slim rewrites)
    keep_one: list[np.ndarray] = field(default_factory=list)

    def spread_removed(self, removed: np.ndarray) -> np.ndarray:
        """Mark the composite channels (head x width) whose head or width is removed."""
        if self.factors is not None:
            comp, head, width = self.factors
            removed[comp] |= removed[head] | removed[width]
        return removed

    def spread_scores(self, root_score: np.ndarray) -> np.ndarray:
        """Hand composite channels' importance to their head and their width."""
        if self.factors is not None:
            comp, head, width = self.factors
            np.add.at(root_score, head, root_score[comp])
            np.add.at(root_score, width, root_score[comp])
        return root_score

    def product_terms(self, comp_roots: np.ndarray, gid_of_root: np.ndarray,
                      sizes: np.ndarray) -> list[tuple[int, int, int]] | None:
        """Composite positions of one op as (multiplicity, head group, width group) terms
        (:func:`uif_explorer.core.factors.product_terms`)."""
        return product_terms(self.factors, comp_roots, gid_of_root, sizes)

    @property
    def prunable_groups(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]

    def group(self, gid: int) -> Group:
        return self.groups[gid]

    def graph_digest(self) -> str:
        """Layer types, shapes and connections; independent of weights and device."""
        payload = json.dumps(self.digest_items, sort_keys=False).encode()
        return hashlib.sha256(payload).hexdigest()[:16]


class ChannelGraphBuilder:
    """Collects classes, unions, fixed classes, slices and MAC ops during a backend's walk."""

    def __init__(self) -> None:
        self.uf = UnionFind()
        self.fixed: dict[int, str] = {}  # class id -> reason
        self.slices: list[ParamSlice] = []
        self.mac_ops: list[MacOp] = []
        self.block_constraints: list[tuple[np.ndarray, int, str]] = []
        self.spaces: list[tuple[str, np.ndarray]] = []  # (producer name, its classes)
        self.param_classes: dict[tuple[str, int], np.ndarray] = {}
        self.members: dict[int, list[str]] = {}  # class id -> module names touching it
        self.notes: list[str] = []
        self.factor_of: dict[int, tuple[int, int]] = {}  # composite class -> (head, width)

    # -- classes -------------------------------------------------------------------------
    def fresh(self, n: int, producer: str | None = None) -> np.ndarray:
        ids = self.uf.grow(n)
        if producer is not None:
            self.spaces.append((producer, ids))
        return ids

    def fresh_fixed(self, n: int, reason: str) -> np.ndarray:
        ids = self.uf.grow(n)
        for i in ids:
            self.fixed[int(i)] = reason
        return ids

    def param_axis(self, param: str, dim: int, size: int, producer: str | None) -> np.ndarray:
        """Classes of one axis of a weight; the same on every call (shared modules).

        ``producer`` names the module when this axis creates channels (an output axis);
        ``None`` for an input axis, which only ties together what feeds it.
        """
        key = (param, dim)
        if key not in self.param_classes:
            self.param_classes[key] = self.fresh(size, producer)
        return self.param_classes[key]

    def unify(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
        pairs = np.unique(np.stack([a.ravel(), b.ravel()], axis=1), axis=0)
        for x, y in pairs:
            if x != y:
                self.uf.union(int(x), int(y))

    def fix(self, classes: np.ndarray, reason: str) -> None:
        for c in np.unique(np.asarray(classes)):
            self.fixed.setdefault(int(c), reason)

    def touch(self, classes: np.ndarray, module: str) -> None:
        """Remember that ``module`` has weights on these channels (for group listings)."""
        for c in np.unique(np.asarray(classes)):
            lst = self.members.setdefault(int(c), [])
            if module not in lst:
                lst.append(module)

    def add_slice(self, sl: ParamSlice, module: str | None = None) -> None:
        self.slices.append(sl)
        if module is not None:
            self.touch(sl.classes, module)

    def add_factors(self, comp: np.ndarray, head: np.ndarray, width: np.ndarray) -> None:
        """Channels ``comp`` are a product: each goes when its ``head`` or ``width`` class goes
        (attention heads split from channels: :mod:`uif_explorer.core.factors`)."""
        for c, h, w in zip(np.ravel(comp), np.ravel(head), np.ravel(width), strict=True):
            self.factor_of.setdefault(int(c), (int(h), int(w)))

    def add_block_constraint(self, classes: np.ndarray, blocks: int, where: str) -> None:
        if blocks > 1:
            self.block_constraints.append((np.asarray(classes).ravel(), blocks, where))

    # -- result --------------------------------------------------------------------------
    def build(
        self,
        param_shapes: dict[str, tuple[int, ...]],
        buffer_shapes: dict[str, tuple[int, ...]],
        total_macs: int,
        digest_items: list[str],
    ) -> ChannelGraph:
        uf = self.uf
        uf.freeze()
        # Groups: producer spaces linked through any shared root.
        space_roots = [(name, uf.roots(ids)) for name, ids in self.spaces]
        link = UnionFind()
        link.grow(len(space_roots))
        first_space_of_root: dict[int, int] = {}
        for si, (_, roots) in enumerate(space_roots):
            for r in np.unique(roots):
                r = int(r)
                if r in first_space_of_root:
                    link.union(first_space_of_root[r], si)
                else:
                    first_space_of_root[r] = si

        by_leader: dict[int, list[int]] = {}
        for si in range(len(space_roots)):
            by_leader.setdefault(link.find(si), []).append(si)

        root_members: dict[int, list[str]] = {}
        for cid, mods in self.members.items():
            r = uf.find(cid)
            lst = root_members.setdefault(r, [])
            lst.extend(m for m in mods if m not in lst)

        factors = resolve_factors(self) if self.factor_of else None
        fixed_roots: dict[int, list[str]] = {}
        for cid, reason in self.fixed.items():
            lst = fixed_roots.setdefault(uf.find(cid), [])
            if reason not in lst:
                lst.append(reason)

        groups: list[Group] = []
        root_group: dict[int, int] = {}
        for leader in sorted(by_leader):
            spaces = by_leader[leader]
            seen: dict[int, None] = {}
            for si in spaces:
                for r in space_roots[si][1]:
                    seen.setdefault(int(r), None)
            roots = np.fromiter(seen.keys(), np.int64, len(seen))
            modules: list[str] = []
            for si in spaces:
                if space_roots[si][0] not in modules:
                    modules.append(space_roots[si][0])
            producers = list(modules)
            for r in roots:
                for m in root_members.get(int(r), ()):
                    if m not in modules:
                        modules.append(m)
            reasons: list[str] = []
            for r in roots:
                for why in fixed_roots.get(int(r), ()):
                    if why not in reasons:
                        reasons.append(why)
            gid = len(groups)
            groups.append(
                Group(gid, modules, roots, excluded_reason=reasons[0] if reasons else None,
                      fix_reasons=reasons, producers=producers)
            )
            for r in roots:
                root_group[int(r)] = gid

        self._apply_block_constraints(groups, root_group)
        if factors is not None:
            for gid in {root_group.get(int(r)) for r in factors[0]} - {None}:
                if groups[gid].prunable:
                    groups[gid].excluded_reason = FACTORED
        for g in groups:
            if g.prunable and g.num_channels < 2:
                g.excluded_reason = "has a single channel"

        modeled = 0
        for op in self.mac_ops:
            modeled += op.full_macs
        other = total_macs - modeled
        if other < 0:  # a modeled op was counted differently than the FLOP counter does
            self.notes.append(f"modeled MACs exceed the counted total by {-other}")
            other = 0
        return ChannelGraph(
            uf=uf,
            slices=self.slices,
            mac_ops=self.mac_ops,
            groups=groups,
            root_group=root_group,
            param_shapes=param_shapes,
            buffer_shapes=buffer_shapes,
            other_macs=other,
            digest_items=digest_items,
            notes=self.notes,
            factors=factors,
        )

    def _apply_block_constraints(self, groups: list[Group], root_group: dict[int, int]) -> None:
        """Grouped convs and GroupNorm: equal removal per block, or exclude the group."""
        per_group: dict[int, list[tuple[np.ndarray, int, str]]] = {}
        for classes, blocks, where in self.block_constraints:
            roots = self.uf.roots(classes)
            gids = {root_group.get(int(r)) for r in roots}
            gids.discard(None)
            for gid in gids:
                per_group.setdefault(gid, []).append((roots, blocks, where))
        for gid, cons in per_group.items():
            g = groups[gid]
            if not g.prunable:
                continue
            roots0, blocks0, where0 = cons[0]
            ok = len(roots0) == g.num_channels and len(set(roots0.tolist())) == len(roots0)
            ok = ok and g.num_channels % blocks0 == 0
            if ok:
                # canonical order: the constrained layout, so block b = positions of block b
                reorder = roots0
                for roots, blocks, _ in cons[1:]:
                    if blocks != blocks0 or not _same_blocks(roots, reorder, blocks):
                        ok = False
                        break
            if not ok:
                g.excluded_reason = (
                    f"its channels are split into conv/norm groups ({where0}) in a layout that "
                    "cannot be pruned evenly"
                )
                continue
            g.roots = np.asarray(reorder, dtype=np.int64)
            g.blocks = blocks0


def _same_blocks(a: np.ndarray, b: np.ndarray, blocks: int) -> bool:
    if len(a) != len(b):
        return False
    size = len(a) // blocks
    return all(
        set(a[i * size : (i + 1) * size].tolist()) == set(b[i * size : (i + 1) * size].tolist())
        for i in range(blocks)
    )


# -- channel-class arrays: the values both backends' graph walks carry -------------------------
@dataclass
class Val:
    """A tensor value: its real shape and its channel-class array (broadcastable to it)."""

    shape: tuple[int, ...]
    cls: np.ndarray

    def full(self) -> np.ndarray:
        return np.broadcast_to(self.cls, self.shape)


def varies(cls: np.ndarray, dim: int) -> bool:
    """Whether the class array changes along ``dim`` (else that dim is a broadcast copy)."""
    if cls.shape[dim] <= 1:
        return False
    first = np.take(cls, [0], axis=dim)
    return not np.array_equal(np.broadcast_to(first, cls.shape), cls)


def varying_dims(cls: np.ndarray) -> list[int]:
    return [d for d in range(cls.ndim) if varies(cls, d)]


def compress(cls: np.ndarray) -> np.ndarray:
    """Shrink dims along which the class does not vary back to size 1 (keeps walks cheap)."""
    for d in range(cls.ndim):
        if cls.shape[d] > 1 and not varies(cls, d):
            cls = np.take(cls, [0], axis=d)
    return np.ascontiguousarray(cls)


def channel_list(v: Val, dim: int) -> np.ndarray | None:
    """Classes along ``dim`` if they do not depend on any other dim, else None."""
    dim = dim % len(v.shape)
    cls = v.cls
    for d in range(cls.ndim):
        if d != dim and varies(cls, d):
            return None
    idx = [0] * cls.ndim
    idx[dim] = slice(None)
    return np.broadcast_to(cls[tuple(idx)], (v.shape[dim],)).copy()
