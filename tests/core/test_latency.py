"""The latency model without any framework: grids, fast widths, prediction, latency-targeted
allocation and the workspace cache, on a hand-built conv chain with a staircase time table
(every op costs ceil(count / 8) steps, as SIMD lanes of 8 floats would)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uif_explorer.core.channels import ChannelGraphBuilder, MacOp
from uif_explorer.core.latency import (
    LatencyModel,
    LatencyTable,
    OpCurve,
    cached_table,
    count_grid,
    fast_widths,
    machine_fingerprint,
    table_mismatch,
)
from uif_explorer.core.pruner import BasePruner

WIDTHS = (3, 64, 96, 64)  # image channels, then three convs; a classifier of 10 outputs


def chain_graph(widths: tuple[int, ...] = WIDTHS):
    b = ChannelGraphBuilder()
    prev = b.fresh_fixed(widths[0], "is a model input")
    for i, w in enumerate(widths[1:]):
        out = b.param_axis(f"conv{i}.weight", 0, w, f"conv{i}")
        b.touch(out, f"conv{i}")
        b.mac_ops.append(MacOp(f"conv{i}", 9 * 100 * len(prev) * w, prev, out))
        prev = out
    b.mac_ops.append(MacOp("fc", len(prev) * 10, prev, None))
    return b.build({}, {}, 0, [f"chain{widths}"])


def staircase(n: int) -> float:
    return math.ceil(n / 8) * 1e-4


def synthetic_table(graph, fingerprint=None, overhead: float = 2e-3) -> LatencyTable:
    """What a measurement would give if time were a staircase in both channel counts."""
    cost = BasePruner(graph).cost
    full_in, full_out = cost.op_counts_of_vector(cost.full_counts)
    ops = []
    for op, fi, fo in zip(graph.mac_ops, full_in, full_out, strict=True):
        fi, fo = int(fi), int(fo)
        t = staircase(fi) * staircase(fo) * 1e3
        ins = count_grid(fi, 64) if fi > 1 else []
        outs = count_grid(fo, 64)
        ops.append(OpCurve(op.name, fi, fo, t, ins, [staircase(c) * staircase(fo) * 1e3
                                                     for c in ins],
                           outs, [staircase(fi) * staircase(c) * 1e3 for c in outs]))
    total = overhead + sum(c.time for c in ops)
    return LatencyTable("eager", fingerprint or machine_fingerprint(threads=1),
                        graph.graph_digest(), total, ops)


def test_count_grid_is_powers_of_two_steps_capped_and_ends_at_full():
    assert count_grid(64, 16) == list(range(4, 65, 4))
    assert count_grid(10, 16) == list(range(1, 11))
    assert count_grid(96, 8, multiple=3)[-1] == 96 and all(c % 3 == 0 for c in
                                                           count_grid(96, 8, multiple=3))
    assert count_grid(1) == [1]


def test_fast_widths_are_where_time_steps_down():
    counts = np.arange(1, 33)
    widths = fast_widths(counts, [staircase(c) for c in counts])
    assert widths.tolist() == [8, 16, 24, 32]
    # within tolerance, a larger count that is as fast wins (noise does not make a width)
    noisy = [staircase(c) * (1.005 if c % 2 else 1.0) for c in counts]
    assert fast_widths(counts, noisy).tolist() == [8, 16, 24, 32]


def test_prediction_of_full_model_and_group_snapping():
    graph = chain_graph()
    pr = BasePruner(graph)
    lat = LatencyModel(synthetic_table(graph), pr.cost)
    assert lat.original == pytest.approx(lat.table.total)
    gid = pr.graph.prunable_groups[0].id
    assert set(lat.fast_widths(gid).tolist()) <= set(range(8, 65, 8))
    assert lat.snap({gid: 33}) == {gid: 40}
    assert lat.snap({gid: 63}) == {}  # rounds up to the full group: nothing removed
    # narrowing a group by one channel below a fast width costs a full step of time
    assert lat.latency_of_counts({gid: 40}) < lat.latency_of_counts({gid: 41})
    assert lat.latency_of_counts({gid: 41}) == pytest.approx(lat.latency_of_counts({gid: 48}))


def test_latency_target_is_met_and_predicted_latency_is_monotone_in_the_target():
    graph = chain_graph()
    pr = BasePruner(graph)
    lat = LatencyModel(synthetic_table(graph), pr.cost)
    previous = lat.original
    for target in (0.15, 0.25, 0.35, 0.45):
        plan = pr.plan_for_removal(target, criterion="random", latency=lat, strict=False,
                                   tolerance=0.05)
        predicted = lat.latency(plan)
        assert predicted < previous
        assert lat.removal(plan) == pytest.approx(target, abs=0.05)
        for gid, keep in plan.kept.items():  # every kept width is one of the fast widths
            assert len(keep) in lat.fast_widths(gid)
        previous = predicted


def test_cached_table_is_reused_and_rebuilt_when_machine_or_model_change(tmp_path):
    graph = chain_graph()
    path = tmp_path / "chain_eager.latency"
    calls = []
    said = []

    def measure(fp=None, g=graph):
        calls.append(1)
        return synthetic_table(g, fp)

    fp = machine_fingerprint(threads=1)
    first = cached_table(path, fp, graph.graph_digest(), "eager", measure, said.append)
    again = cached_table(path, fp, graph.graph_digest(), "eager", measure, said.append)
    assert len(calls) == 1 and again.total == pytest.approx(first.total)

    other_machine = {**fp, "cpu": "another CPU"}
    assert table_mismatch(first.to_json(), other_machine, graph.graph_digest(), "eager")
    cached_table(path, other_machine, graph.graph_digest(), "eager",
                 lambda: measure(other_machine), said.append)
    assert len(calls) == 2 and "cpu changed" in said[-1]

    wider = chain_graph((3, 64, 128, 64))
    cached_table(path, other_machine, wider.graph_digest(), "eager",
                 lambda: measure(other_machine, wider), said.append)
    assert len(calls) == 3 and "graph changed" in said[-1]
    assert "measured for 'eager'" in table_mismatch(first.to_json(), fp, graph.graph_digest(),
                                                     "onnxruntime")[0]


def test_overhead_splits_into_fixed_and_activation_parts_from_the_probe_timing():
    """A model whose non-layer time is 1 ms fixed + 3 ms following activation size: timing it
    at full width and at a probe width recovers both, so narrowing also shrinks the 3 ms."""
    graph = chain_graph()
    pr = BasePruner(graph)
    table = synthetic_table(graph, overhead=0.0)
    for c in table.ops:
        c.out_elems = c.full_out * 100
    plain = LatencyModel(table, pr.cost)
    probe = {g.id: g.num_channels // 2 for g in graph.prunable_groups}
    inn, out = pr.cost.op_counts_of_vector(pr.cost.full_counts)
    elems = np.array([c.out_elems for c in table.ops], dtype=float)
    k = pr.cost.full_counts.copy()
    for gid, n in probe.items():
        k[pr.cost.group_index[gid]] = n
    act = float((elems / elems.sum() * pr.cost.op_counts_of_vector(k)[1] / out).sum())
    table.total += 1e-3 + 3e-3
    table.probe_counts = {str(g): n for g, n in probe.items()}
    table.probe_total = plain.latency_of_counts(probe) + 1e-3 + 3e-3 * act
    lat = LatencyModel(table, pr.cost)
    assert lat.overhead == pytest.approx(1e-3) and lat.scaled_overhead == pytest.approx(3e-3)
    assert lat.original == pytest.approx(table.total)
    assert lat.latency_of_counts(probe) == pytest.approx(table.probe_total)
    assert LatencyTable.from_json(table.to_json()).probe_counts == table.probe_counts
