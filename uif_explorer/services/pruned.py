"""The session's pruned model: one typed record instead of a dict built on every page.

A :class:`PrunedModel` is made by the Sensitivity page (sparse prune, then fine-tune), the
One-step page (a built candidate), the Export page (rebuilt from a saved spec) and the OFA page
(a static subnet); the Export page reads it and caches what it derives (slim model, ONNX bytes,
latency) on it. The derived fields belong to that one model, so :meth:`with_model` drops them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SPARSE, SLIM, OFA_SUBNET = "sparse", "slim", "ofa_subnet"


@dataclass
class PrunedModel:
    """A pruned model and what the pages say about it.

    Attributes:
        model: the pruned ``nn.Module`` or ``keras.Model``.
        kind: 'sparse' (same shapes, pruned channels zero), 'slim' or 'ofa_subnet'.
        model_name: the name (workspace file stem) of the model it was pruned from.
        framework: 'torch' or 'keras'.
        source: how it was made, in words ("Sensitivity, 30 % of the MACs removed").
        spec_path: the spec (or OFA subnet file) that rebuilds it.
        accuracy: its score in %, on ``images`` evaluation images described by
            ``score_source`` (a label-free score when ``label_free``).
    """

    model: Any
    kind: str
    model_name: str
    framework: str
    source: str
    spec_path: str
    accuracy: float
    images: int
    score_source: str
    label_free: bool = False
    removal_ratio: float | None = None
    macs_m: float | None = None
    params_m: float | None = None
    candidate: int | None = None
    net_id: str | None = None
    supernet: str | None = None
    subnet_setting: list[dict[str, Any]] | None = None
    search_data: str | None = None
    accuracy_before_ft: float | None = None
    finetune_serial: int | None = None
    # derived by the Export page, for this model only
    slim: Any = field(default=None, repr=False)
    onnx: dict[str, Any] | None = field(default=None, repr=False)
    latency: dict[str, float] | None = None

    @property
    def score_title(self) -> str:
        return "Label-free score" if self.label_free else "Accuracy"

    @property
    def from_sensitivity(self) -> bool:
        return self.source.startswith("Sens")

    def facts(self) -> dict[str, Any]:
        """Plain values (str / number / None) for reports: no model, no derived objects."""
        skip = {"model", "slim", "onnx", "latency", "subnet_setting", "finetune_serial"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in skip
                and isinstance(getattr(self, f.name), (str, int, float, type(None)))}

    def with_model(self, model: Any, **changes: Any) -> PrunedModel:
        """A copy holding another model (e.g. fine-tuned): the derived fields are dropped."""
        return dataclasses.replace(self, model=model, slim=None, onnx=None, latency=None,
                                   **changes)
