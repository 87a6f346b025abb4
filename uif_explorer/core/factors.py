"""Composite channels: attention heads x head width (framework-neutral).

A backend that splits channels into heads (``torch/rules/heads.py``) records, per channel,
the head class and the width class it belongs to (``ChannelGraphBuilder.add_factors``). Such a
channel is *composite*: it goes when its head or its width goes, so the head and width groups
are pruned independently while every head keeps the same width. Here: resolving those records
into roots after the walk (fixed composites fix their factors) and the count model's product
terms (an op keeps ``multiplicity x kept heads x kept widths`` of them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from uif_explorer.core.channels import ChannelGraphBuilder

Factors = tuple[np.ndarray, np.ndarray, np.ndarray]  # composite, head, width roots (by composite)


def resolve_factors(b: ChannelGraphBuilder) -> Factors:
    """Composite roots and their (head, width) roots, one row per composite root.

    A composite channel that is fixed (a barrier, a model output, an excluded layer) fixes its
    head and width with the same reason; one whose channels were tied to two different
    (head, width) pairs fixes all of them (the heads cannot be cut out cleanly)."""
    uf = b.uf
    fixed_root = {}
    for cid, reason in b.fixed.items():
        fixed_root.setdefault(uf.find(cid), reason)
    pair_of: dict[int, tuple[int, int]] = {}
    for c, (h, w) in b.factor_of.items():
        r, pair = uf.find(c), (uf.find(h), uf.find(w))
        if pair_of.setdefault(r, pair) != pair:
            b.fix(np.array([*pair, *pair_of[r]]), "attention heads mixed with other channels")
        if r in fixed_root:
            b.fix(np.array(pair), fixed_root[r])
    comp = np.fromiter(pair_of, np.int64, len(pair_of))
    order = np.argsort(comp)  # sorted: looked up with searchsorted
    heads = np.array([p[0] for p in pair_of.values()], dtype=np.int64)
    widths = np.array([p[1] for p in pair_of.values()], dtype=np.int64)
    return comp[order], heads[order], widths[order]


def product_terms(factors: Factors | None, comp_roots: np.ndarray, gid_of_root: np.ndarray,
                  sizes: np.ndarray) -> list[tuple[int, int, int]] | None:
    """Composite positions of one op as (multiplicity, head group, width group) terms: they
    keep ``multiplicity * kept heads * kept widths``. None when they are not whole
    products (then MACs are not a function of kept counts alone)."""
    if factors is None or not len(comp_roots):
        return []
    comp, head, width = factors
    at = np.searchsorted(comp, comp_roots)
    h, w = head[at], width[at]
    hg, wg = gid_of_root[h], gid_of_root[w]
    terms = []
    for gh, gw in set(zip(hg.tolist(), wg.tolist(), strict=True)):
        sel = (hg == gh) & (wg == gw)
        _, cnt = np.unique(h[sel] * len(gid_of_root) + w[sel], return_counts=True)
        if (min(gh, gw) < 0 or gh == gw or len(cnt) != sizes[gh] * sizes[gw]
                or cnt.min() != cnt.max()):
            return None
        terms.append((int(cnt[0]), gh, gw))
    return terms
