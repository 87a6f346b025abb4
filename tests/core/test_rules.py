"""The framework-neutral graph rules (core/rules.py) on hand-made class arrays.

These are the rules both backends' walks call: element-wise unify with broadcasting, concat,
row-major reshape grouping, barriers, the unknown-weighted-layer check and the layer-rule
registry. The module must import without torch or TensorFlow (checked in a subprocess).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from uif_explorer.core.channels import ChannelGraphBuilder, Val
from uif_explorer.core.rules import (
    Barrier,
    LayerRegistry,
    LayerRule,
    UnsupportedLayerError,
    barrier,
    check_unknown,
    concat_classes,
    make_rule,
    reshape_classes,
    unify_elementwise,
)


def channels(b: ChannelGraphBuilder, n: int, shape: tuple[int, ...], dim: int = 1,
             name: str = "conv") -> Val:
    ids = b.fresh(n, name)
    return Val(shape, ids.reshape([n if d == dim else 1 for d in range(len(shape))]))


def graph(b: ChannelGraphBuilder):
    return b.build({}, {}, 0, [])


def test_residual_add_ties_channels_and_gate_broadcast_is_not_unified():
    b = ChannelGraphBuilder()
    x = channels(b, 4, (1, 4, 5, 5), name="a")
    y = channels(b, 4, (1, 4, 5, 5), name="b")
    out = unify_elementwise(b, [x, y], (1, 4, 5, 5), "block")
    mask = channels(b, 1, (1, 1, 5, 5), name="spatial_gate")
    unify_elementwise(b, [out, mask], (1, 4, 5, 5), "gate")
    g = graph(b)
    (ab,) = [grp for grp in g.groups if grp.name == "a"]
    assert ab.modules == ["a", "b"] and ab.num_channels == 4 and ab.prunable
    (gate,) = [grp for grp in g.groups if grp.name == "spatial_gate"]
    assert not gate.prunable and "broadcast against channels in gate" in gate.excluded_reason


def test_constant_operand_fixes_channels_without_merging_them():
    b = ChannelGraphBuilder()
    x = channels(b, 16, (1, 16, 4, 4), name="producer")
    scale = Val((1, 16, 1, 1), np.full((1, 1, 1, 1), b.fresh_fixed(1, "weight view")[0]))
    unify_elementwise(b, [x, scale], (1, 16, 4, 4), "scale")
    (grp,) = graph(b).groups
    assert grp.num_channels == 16  # not merged into one class
    assert not grp.prunable and "broadcast against channels" in grp.excluded_reason


def test_elementwise_without_full_operand_is_a_barrier():
    b = ChannelGraphBuilder()
    x = channels(b, 4, (1, 4, 1, 1))
    with pytest.raises(Barrier, match="full-shape"):
        unify_elementwise(b, [x], (1, 4, 3, 3), "op")


def test_concat_keeps_inputs_distinct_and_barrier_fixes_them():
    b = ChannelGraphBuilder()
    x = channels(b, 3, (1, 3, 2, 2), name="a")
    y = channels(b, 5, (1, 5, 2, 2), name="b")
    out = concat_classes([x, y], 1, (1, 8, 2, 2))
    assert out.cls.shape == (1, 8, 1, 1)
    assert out.cls.ravel().tolist() == x.cls.ravel().tolist() + y.cls.ravel().tolist()
    barrier(b, [y, "not a value"], "channel shuffle (op in m)")
    groups = {grp.name: grp for grp in graph(b).groups}
    assert groups["a"].prunable and groups["b"].excluded_reason == "channel shuffle (op in m)"


def test_flatten_merges_row_major_and_shuffle_is_a_barrier():
    b = ChannelGraphBuilder()
    x = channels(b, 3, (2, 3, 2, 2))
    flat = reshape_classes(x, (2, 12), sizes=[2, -1])
    assert flat.cls.shape == (1, 12)
    assert flat.cls.ravel().tolist() == np.repeat(x.cls.ravel(), 4).tolist()
    with pytest.raises(Barrier, match="hard-coded size"):
        reshape_classes(x, (2, 12), sizes=[2, 12])
    y = channels(b, 8, (1, 8, 2, 2))
    with pytest.raises(Barrier, match="channel shuffle"):
        reshape_classes(y, (1, 2, 4, 2, 2))
    unit = reshape_classes(y, (1, 8, 4))  # merging spatial dims only keeps the channels
    assert unit.cls.ravel().tolist() == y.cls.ravel().tolist()


def test_check_unknown_raises_only_where_no_rule_is_the_sole_reason():
    b = ChannelGraphBuilder()
    x = channels(b, 4, (1, 4), dim=1, name="fc")
    y = channels(b, 4, (1, 4), dim=1, name="other")
    barrier(b, [x], "no pruning rule for op 'bilinear'")
    barrier(b, [y], "feeds a model output")  # the first reason a class gets is kept
    barrier(b, [y], "no pruning rule for op 'bilinear'")
    g = graph(b)
    check_unknown(g, [("bilinear", "m", y.cls.ravel())], lambda *a: "unused")
    with pytest.raises(UnsupportedLayerError, match="fc has 4"):
        check_unknown(g, [("bilinear", "m", x.cls.ravel())],
                      lambda op, where, grp: f"{grp.name} has {grp.num_channels}")


def test_registry_looks_up_along_the_mro_and_by_class_name():
    class Base:
        pass

    class Child(Base):
        pass

    reg = LayerRegistry()
    base_rule = make_rule(out_dims={"w": 0}, in_dims={"w": 1})
    reg.register(Base, base_rule)
    reg.register("Scale", make_rule(channelwise=True, out_dims={"gamma": 0}))
    assert reg.lookup(Child()) is base_rule and reg.lookup(Child) is base_rule
    assert reg.lookup("Scale").kind == "channelwise"
    assert reg.lookup(type("Scale", (), {})).kind == "channelwise"  # by name, for configs
    assert len(reg) == 2 and {k for k, _ in reg} == {Base, "Scale"}
    reg.unregister(Base)
    assert reg.lookup(Child) is None
    with pytest.raises(ValueError, match="out_dims"):
        make_rule()
    with pytest.raises(ValueError, match="kind"):
        LayerRule("weird", {"w": 0})


def test_core_rules_import_without_frameworks():
    code = (
        "import sys\n"
        "for m in ('torch', 'tensorflow', 'keras', 'streamlit'): sys.modules[m] = None\n"
        "import uif_explorer.core.rules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
