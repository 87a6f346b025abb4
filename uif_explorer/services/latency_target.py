"""What the app and the CLI prune to when the user sets nothing: MACs or latency, and widths.

The engine's API keeps ``channel_divisible=2`` as its default (reproducible plans across
machines for the guide's loop, ``docs/latency.md``). A user of the app or the CLI who sets
nothing should get the speed instead: there the default rounding is this CPU's vector width
(8 floats with AVX2), and a latency target rounds kept counts up to the widths this machine's
latency table says are fast on top of it. An explicit divisor always wins.

The pages' words for the choice live here too (what the ratio means, how the latency is
predicted), so the Sensitivity, One-step and OFA pages say the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from uif_explorer.core.latency import simd_lanes

# label shown to the user -> the engine's ``target``
TARGET_CHOICES = {"MACs (fraction of the multiply-accumulates)": "macs",
                  "Latency (fraction of this machine's measured time)": "latency"}
# what a removal ratio is a fraction of, for slider labels and captions
RATIO_OF = {"macs": "of the MACs", "latency": "of this machine's predicted latency"}
SLIDER_LABEL = {"macs": "MACs to remove (%)", "latency": "Predicted latency to remove (%)"}
TABLE_NOTE = ("Latency target: the time of each layer at several channel counts is measured "
              "once on this machine (seconds for the sample models, minutes for large ones; "
              "saved in this workspace and measured again only when the machine or the model "
              "changes). Latencies shown are **predicted** from that table, in ms at batch 1, "
              "not timed on the pruned model: the Export page times the real one.")


def default_divisible(explicit: int | None = None) -> int:
    """``explicit`` when the user gave one, else this CPU's float32 vector width."""
    if explicit is not None:
        if isinstance(explicit, bool) or not isinstance(explicit, int) or explicit < 1:
            raise ValueError("Expected channel_divisible to be a positive integer. Received: "
                             f"channel_divisible={explicit!r}")
        return explicit
    return simd_lanes()


def prune_options(target: str = "macs", divisible: int | None = None) -> dict[str, Any]:
    """Keyword arguments for ``runner.plan`` / ``prune`` / ``search``: the target and the
    machine's default rounding (or the user's divisor)."""
    if target not in TARGET_CHOICES.values():
        raise ValueError(f"Expected target in {tuple(TARGET_CHOICES.values())}. Received: "
                         f"target={target!r}")
    return {"target": target, "channel_divisible": default_divisible(divisible)}


def divisors(target: str) -> tuple[int, ...]:
    """The roundings a page's plan tries, coarsest first, until one lands on the target.

    MACs keep the runners' default (2, then 1: the plans the guide's loop reproduces); a
    latency target starts at this machine's vector width (``prune_options``), where the time
    steps down, then 2 and 1 for small models whose groups are few channels wide."""
    first = prune_options(target)["channel_divisible"] if target == "latency" else 2
    return tuple(dict.fromkeys((first, 2, 1)))


def removed_text(ratio: float, target: str) -> str:
    """'30 % of the MACs removed': a removal ratio in the words every page, job and saved
    model uses, so a pruned model's source reads like the slider that made it."""
    return f"{round(ratio * 100)} % {RATIO_OF[prune_options(target)['target']]} removed"


def ratio_help(target: str) -> str:
    """The help text of a page's removal ratio: what it is a fraction of."""
    what = RATIO_OF[prune_options(target)["target"]]
    return f"The share {what} to remove, relative to the original model."


def latency_metric(preview: Any) -> dict[str, str]:
    """The predicted latency of a plan preview as one metric (none for a MACs target)."""
    if getattr(preview, "latency_ms", None) is None:
        return {}
    return {"Predicted latency": f"{preview.latency_ms:.2f} ms "
                                 f"(from {preview.original_latency_ms:.2f})"}


def table_job(runner: Any, remeasure: bool = False) -> Callable[[Any], Any]:
    """``work(job)`` that measures (or reads back; ``remeasure``: measures afresh) ``runner``'s
    latency table on this machine, so a page can plan to a latency target without timing
    layers in its own script run."""

    def work(job: Any) -> Any:
        return runner.latency_table(remeasure)

    return work


def predicted_ms(entry: Mapping[str, Any]) -> float | None:
    """The predicted latency (ms) a latency-targeted candidate or subnet carries, else None."""
    value = entry.get("latency_ms")
    return None if value is None else float(value)


def with_predicted_latency(table: Any, search: Mapping[str, Any], key: str = "id",
                           entries: str = "candidates") -> Any:
    """A page's table of a search's entries with each one's predicted latency (column
    ``latency_ms``) when the search was latency-targeted; unchanged for a MACs search. The
    One-step candidates (``id`` in ``candidates``) and the OFA subnets (``net_id`` in
    ``history``)."""
    if search.get("target") != "latency":
        return table
    by_id = {str(c[key]): predicted_ms(c) for c in search.get(entries, [])}
    return table.assign(latency_ms=[by_id.get(str(i)) for i in table[key]])
