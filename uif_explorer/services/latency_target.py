"""What the app and the CLI prune to when the user sets nothing: MACs or latency, and widths.

The engine's API keeps ``channel_divisible=2`` as its default (reproducible plans across
machines for the guide's loop, ``docs/latency.md``). A user of the app or the CLI who sets
nothing should get the speed instead: there the default rounding is this CPU's vector width
(8 floats with AVX2), and a latency target rounds kept counts up to the widths this machine's
latency table says are fast on top of it. An explicit divisor always wins.
"""

from __future__ import annotations

from typing import Any

from uif_explorer.core.latency import simd_lanes

# label shown to the user -> the engine's ``target``
TARGET_CHOICES = {"MACs (fraction of the multiply-accumulates)": "macs",
                  "Latency (fraction of this machine's measured time)": "latency"}


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
