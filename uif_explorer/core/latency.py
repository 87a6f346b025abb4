"""A latency model of the user's machine: measured per-layer times over channel counts.

MACs predict time poorly where it matters (depthwise convolutions, memory-bound and small
layers, widths that miss the SIMD lanes), so a latency target is priced from a table measured
on this machine for the runtime the model is deployed with. Each counted op (conv / linear) of
the :class:`~uif_explorer.core.channels.ChannelGraph` gets two sweeps, over its kept inputs
(outputs full) and over its kept outputs (inputs full); a pruned op is predicted by the
separable product ``T * in(i)/T * out(o)/T``. Everything the table does not time (norms,
activations, adds, pooling, dispatch) is the overhead: the measured whole model minus the
ops (when the ops alone add up to more than the model, they are scaled down to it instead).
Part of it is fixed per op and part follows the activations' size (memory-bound element-wise
ops); a second whole-model timing of a uniformly half-width slim model splits the two.

Framework-neutral: a backend measures (:mod:`uif_explorer.torch.latency`); tables are cached in
the workspace keyed by a machine fingerprint and the graph digest.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uif_explorer.core.allocation import TARGET_TOLERANCE, bisect_plan, check_landing
from uif_explorer.core.plan import CostModel, PlanError, PruningPlan
from uif_explorer.io.workspace import WorkspaceError, atomic_write_json, read_json

LATENCY_KIND = "uif-explorer-latency"
FAST_TOLERANCE = 0.02
DEFAULT_POINTS = 16
RUNTIMES = ("eager", "onnxruntime")
PROBE_RATIO = 0.5  # groups' removal in the overhead-splitting probe model


@dataclass
class OpCurve:
    """Measured times (seconds) of one counted op: full width and the two sweeps.

    Counts are in the cost model's units: kept inputs per conv group, kept outputs. An empty
    sweep means time does not depend on that side (fixed input, depthwise input).
    """

    name: str
    full_in: int
    full_out: int
    time: float
    in_counts: list[int] = field(default_factory=list)
    in_times: list[float] = field(default_factory=list)
    out_counts: list[int] = field(default_factory=list)
    out_times: list[float] = field(default_factory=list)
    out_elems: int = 0  # elements of the op's output at full width (activation size)


@dataclass
class LatencyTable:
    """Per-op curves of one model on one machine and runtime, plus the whole-model time."""

    runtime: str
    fingerprint: dict[str, Any]
    graph_digest: str
    total: float
    ops: list[OpCurve | None]  # graph.mac_ops order; None: not timed (part of the overhead)
    batch: int = 1
    # the whole model timed again as a uniformly narrowed slim model: its kept count per
    # group id and seconds; splits the overhead into fixed and activation-proportional parts
    probe_counts: dict[str, int] = field(default_factory=dict)
    probe_total: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"format_version": 1, "kind": LATENCY_KIND, **asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LatencyTable:
        ops = [OpCurve(**op) if op is not None else None for op in data["ops"]]
        return cls(runtime=data["runtime"], fingerprint=dict(data["fingerprint"]),
                   graph_digest=data["graph_digest"], total=float(data["total"]), ops=ops,
                   batch=int(data.get("batch", 1)),
                   probe_counts=dict(data.get("probe_counts") or {}),
                   probe_total=data.get("probe_total"))


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, else ``platform``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def simd_lanes() -> int:
    """float32 lanes of this CPU's widest vector unit (AVX-512: 16, AVX/AVX2: 8, NEON or
    SSE: 4), from ``/proc/cpuinfo`` flags; 2 when unknown. Channel counts that are multiples
    of it fill the vector registers of the conv kernels (``docs/latency.md``, Defaults)."""
    try:
        text = Path("/proc/cpuinfo").read_text().lower()
    except OSError:
        text = ""
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "features")):
            flags.update(line.split(":", 1)[1].split())
    if "avx512f" in flags:
        return 16
    if flags & {"avx2", "avx"}:
        return 8
    if flags & {"asimd", "neon", "sse2", "sse4_1"} or platform.machine() in ("arm64", "aarch64"):
        return 4
    return 2


def machine_fingerprint(**runtime: object) -> dict[str, Any]:
    """What makes a latency table valid: CPU, cores, OS/arch and the runtime's versions and
    threads (passed by the backend, e.g. ``torch='2.9', threads=2``)."""
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "machine": platform.machine(),
            "system": platform.system(), **{k: runtime[k] for k in sorted(runtime)}}


def table_mismatch(data: Mapping[str, Any], fingerprint: Mapping[str, Any],
                   graph_digest: str, runtime: str) -> list[str]:
    """Why a cached table cannot be reused (empty when it can)."""
    why = []
    if data.get("graph_digest") != graph_digest:
        why.append("the model's graph changed")
    if data.get("runtime") != runtime:
        why.append(f"it was measured for {data.get('runtime')!r}, not {runtime!r}")
    old = data.get("fingerprint") or {}
    why += [f"{k} changed ({old.get(k)!r} -> {v!r})" for k, v in fingerprint.items()
            if old.get(k) != v]
    return why


def cached_table(path: str | os.PathLike, fingerprint: Mapping[str, Any], graph_digest: str,
                 runtime: str, measure: Callable[[], LatencyTable],
                 say: Callable[[str], None] = print) -> LatencyTable:
    """The workspace's table when machine, runtime and graph match; else ``measure()`` and
    save it (atomically), saying why it was rebuilt."""
    path = Path(path)
    if path.exists():
        try:
            data = read_json(path, kind=LATENCY_KIND)
            why = table_mismatch(data, fingerprint, graph_digest, runtime)
        except WorkspaceError as exc:
            why = [str(exc)]
        if not why:
            return LatencyTable.from_json(data)
        say(f"re-measuring the latency table {path}: " + "; ".join(why))
    table = measure()
    atomic_write_json(path, table.to_json())
    return table


def count_grid(full: int, max_points: int = DEFAULT_POINTS, multiple: int = 1) -> list[int]:
    """Channel counts to time: multiples of the smallest power of two (times ``multiple``)
    that keeps at most ``max_points`` of them, plus the full count."""
    if full <= 1:
        return [max(1, full)]
    step = 1
    while full // (step * multiple) > max_points:
        step *= 2
    step *= multiple
    return sorted({*range(step, full, step), full})


def fast_widths(counts: np.ndarray, times: np.ndarray,
                tolerance: float = FAST_TOLERANCE) -> np.ndarray:
    """Counts clearly faster than every larger count (plus the largest): where the time curve
    steps down. A count that a larger one matches within ``tolerance`` is not worth keeping
    fewer channels for, so rounding goes up to the next fast width."""
    counts, times = np.asarray(counts), np.asarray(times, dtype=float)
    order = np.argsort(counts)
    counts, times = counts[order], times[order]
    keep = [len(counts) - 1]
    best = times[-1]
    for i in range(len(counts) - 2, -1, -1):
        if times[i] < best * (1.0 - tolerance):
            keep.append(i)
            best = times[i]
    return np.sort(counts[keep])


def _dense(full: int, counts: list[int], times: list[float]) -> np.ndarray:
    """Relative time for every count 0..full, linear between measured counts; relative to
    the sweep's own full-width time so that timing noise between sweeps cancels."""
    if not counts or counts[-1] != full or times[-1] <= 0:
        return np.ones(full + 1)
    return np.interp(np.arange(full + 1), counts, times) / times[-1]


class LatencyModel:
    """Predicted latency of any plan (or kept counts) of one graph from a measured table."""

    def __init__(self, table: LatencyTable, cost: CostModel) -> None:
        ops = cost.graph.mac_ops
        if len(table.ops) != len(ops):
            raise PlanError(f"Expected a latency table with one entry per counted op "
                            f"({len(ops)}). Received: {len(table.ops)} entries; re-measure it.")
        self.table, self.cost = table, cost
        full_in, full_out = cost.op_counts_of_vector(cost.full_counts)
        base, d_in, d_out, o_in, o_out = [], [], [], [], []
        pos_in = pos_out = 0
        for curve, fi, fo in zip(table.ops, full_in, full_out, strict=True):
            t = curve.time if curve is not None else 0.0
            base.append(t)
            a = _dense(int(fi), curve.in_counts, curve.in_times) if curve else np.ones(fi + 1)
            b = _dense(int(fo), curve.out_counts, curve.out_times) if curve else np.ones(fo + 1)
            d_in.append(a)
            d_out.append(b)
            o_in.append(pos_in)
            o_out.append(pos_out)
            pos_in, pos_out = pos_in + len(a), pos_out + len(b)
        # Layers timed alone can add up to more than the whole model (each standalone call
        # pays dispatch and thread start-up that the model amortises): scale them down to it.
        t = np.array(base)
        self._t = t * min(1.0, table.total / t.sum()) if t.sum() > 0 else t
        self._in, self._out = np.concatenate(d_in), np.concatenate(d_out)
        self._o_in, self._o_out = np.array(o_in, np.int64), np.array(o_out, np.int64)
        elems = np.array([c.out_elems if c is not None else 0 for c in table.ops], dtype=float)
        self._act = elems / max(1.0, elems.sum())  # share of activation size per op
        self._full_out = np.maximum(1, full_out)
        self.overhead = max(0.0, table.total - float(self._t.sum()))
        self.scaled_overhead = 0.0
        if table.probe_total is not None and table.probe_counts and elems.sum() > 0:
            self._split_overhead(table)
        self.original = self.latency(None)
        self._fast: dict[int, np.ndarray] = {}

    def _split_overhead(self, table: LatencyTable) -> None:
        """Fit fixed + activation-proportional overhead to the full and the probe timing."""
        k = self.cost.full_counts.copy()
        for gid, n in table.probe_counts.items():
            k[self.cost.group_index[int(gid)]] = n
        inn, out = self.cost.op_counts_of_vector(k)
        ops_probe = float((self._t * self._in[self._o_in + inn]
                           * self._out[self._o_out + out]).sum())
        act = self._activation(out)
        if act >= 0.999:
            return
        rest_full, rest_probe = self.overhead, table.probe_total - ops_probe
        scaled = min(rest_full, max(0.0, (rest_full - rest_probe) / (1.0 - act)))
        self.scaled_overhead, self.overhead = scaled, rest_full - scaled

    def _activation(self, out: np.ndarray) -> float:
        """Activation size relative to the full model (1.0 at full width)."""
        return float((self._act * out / self._full_out).sum()) if self._act.any() else 1.0

    def _of_ops(self, inn: np.ndarray, out: np.ndarray) -> float:
        return float(self.overhead + self.scaled_overhead * self._activation(out)
                     + self._op_times(inn, out).sum())

    def _op_times(self, inn: np.ndarray, out: np.ndarray) -> np.ndarray:
        return self._t * self._in[self._o_in + inn] * self._out[self._o_out + out]

    def op_times(self, plan: PruningPlan | None) -> np.ndarray:
        """Predicted seconds of each counted op (``graph.mac_ops`` order) in ``plan``'s slim
        model; 0 for ops the table left to the overhead."""
        return self._op_times(*self.cost.op_counts(plan))

    def latency_of_vector(self, k: np.ndarray) -> float:
        """Seconds with ``k`` kept channels per group (``graph.groups`` order)."""
        return self._of_ops(*self.cost.op_counts_of_vector(np.asarray(k, dtype=np.int64)))

    def latency_of_counts(self, counts: Mapping[int, int]) -> float:
        k = self.cost.full_counts.copy()
        for gid, n in counts.items():
            k[self.cost.group_index[gid]] = n
        return self.latency_of_vector(k)

    def latency(self, plan: PruningPlan | None) -> float:
        """Seconds of the slim model of ``plan`` (exact op counts on any graph)."""
        return self._of_ops(*self.cost.op_counts(plan))

    def removal_of_counts(self, counts: Mapping[int, int]) -> float:
        """Fraction of the original predicted latency removed."""
        return 1.0 - self.latency_of_counts(counts) / max(self.original, 1e-12)

    def removal(self, plan: PruningPlan) -> float:
        return 1.0 - self.latency(plan) / max(self.original, 1e-12)

    def group_curve(self, gid: int, counts: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(counts, predicted seconds) with only group ``gid`` narrowed; by default at the
        counts its ops were timed at (every count when none was)."""
        g = self.cost.graph.groups[gid]
        if counts is None:
            measured = set()
            for curve in self.table.ops:
                if curve is None:
                    continue
                if curve.full_out == g.num_channels:
                    measured.update(curve.out_counts)
                if curve.full_in == g.num_channels:
                    measured.update(curve.in_counts)
            counts = np.array(sorted(c for c in measured if 1 <= c <= g.num_channels)
                              or range(1, g.num_channels + 1))
        k = self.cost.full_counts.copy()
        i = self.cost.group_index[gid]
        times = []
        for c in counts:
            k[i] = c
            times.append(self.latency_of_vector(k))
        return np.asarray(counts), np.array(times)

    def fast_widths(self, gid: int) -> np.ndarray:
        """Kept counts of group ``gid`` where this machine's time steps down (cached)."""
        if gid not in self._fast:
            g = self.cost.graph.groups[gid]
            counts, times = self.group_curve(gid)
            widths = fast_widths(counts, times)
            widths = widths[widths % max(1, g.blocks) == 0]
            self._fast[gid] = np.union1d(widths, [g.num_channels])
        return self._fast[gid]

    def snap(self, counts: Mapping[int, int]) -> dict[int, int]:
        """Each count rounded up to its group's next fast width (never above the group)."""
        out = {}
        for gid, n in counts.items():
            widths = self.fast_widths(gid)
            out[gid] = int(widths[np.searchsorted(widths, n)])
        return {gid: n for gid, n in out.items() if n < self.cost.graph.groups[gid].num_channels}

    def op_rows(self) -> list[dict[str, Any]]:
        """One row per timed op: name, full time in ms and share of the whole model."""
        total = max(self.table.total, 1e-12)
        return [{"op": c.name, "in": c.full_in, "out": c.full_out, "ms": c.time * 1e3,
                 "share": c.time / total} for c in self.table.ops if c is not None]


def bisect_latency(pruner: Any, latency: LatencyModel,
                   ratios_at: Callable[[float], dict[int, float]], hi: float, target: float, *,
                   criterion: str = "l1", channel_divisible: int = 2, strict: bool = False,
                   argument: str = "removal_ratio",
                   tolerance: float = TARGET_TOLERANCE) -> PruningPlan:
    """A plan removing ``target`` of the *predicted latency*: the same per-group ratio
    bisection as for MACs, costed by ``latency``, with kept counts rounded up to this
    machine's fast widths (``pruner`` is a :class:`~uif_explorer.core.pruner.BasePruner`)."""

    def counts_of(r: dict[int, float]) -> dict[int, int]:
        return latency.snap(pruner.counts(r, channel_divisible))

    plan = bisect_plan(
        pruner.cost, ratios_at, lambda r: pruner.plan_from_counts(counts_of(r), criterion),
        target, hi=hi, tolerance=tolerance, quantum=pruner.quantum(channel_divisible),
        counts_of=counts_of, strict=False, removal_of_counts=latency.removal_of_counts,
        what="predicted latency",
    )
    check_landing(latency.removal(plan), target, channel_divisible=channel_divisible,
                  strict=strict, argument=argument, tolerance=tolerance,
                  what="predicted latency")
    return plan
