"""A ``torch.export`` program with two inputs and a dict output uploaded on the Model page
(issue 18 item 4): the app builds its example inputs from the program's own (zeros of each
input at batch 1), so the size, MACs and channel groups are shown, and the page says how to
score it (the app's data feeds one image tensor). A reload rebuilds the same two inputs."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from uif_explorer.services import model_source
from uif_explorer.services.summary import format_params
from uif_explorer.torch.macs import model_cost

APP = "../../app.py"


class TwoInputs(nn.Module):
    """An image and a depth map, fused, with a dict of outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.rgb = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.depth = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.ReLU())
        self.cls = nn.Linear(24, 5)
        self.seg = nn.Conv2d(24, 2, 1)

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.fuse(self.rgb(rgb) + self.depth(depth))
        return {"logits": self.cls(y.mean((2, 3))), "mask": self.seg(y)}



def test_a_two_input_program_is_summarised_with_its_groups(root: Path) -> None:
    torch.manual_seed(0)
    model = TwoInputs().eval()
    inputs = (torch.randn(1, 3, 16, 16), torch.randn(1, 1, 16, 16))
    buf = io.BytesIO()
    torch.export.save(torch.export.export(model, inputs), buf)
    at = AppTest.from_file(APP, default_timeout=240).run()
    at.file_uploader(key="up_pt2").set_value(("two.pt2", buf.getvalue(),
                                              "application/octet-stream"))
    at.run()
    at.button(key="up_pt2_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Input"] == "1x3x16x16, 1x1x16x16"
    assert metrics["Parameters"] == format_params(model_cost(model, inputs).params)
    groups = [df.value for df in at.dataframe if "layers" in df.value.columns]
    assert groups and groups[0]["prunable"].sum() >= 2
    assert any("takes 2 inputs" in c.value for c in at.caption)
    # the stored source rebuilds both inputs after a reload
    saved = model_source.read_current(next(root.iterdir()))
    assert saved is not None and saved.inputs == (((1, 3, 16, 16), "float32"),
                                                  ((1, 1, 16, 16), "float32"))
    x = model_source.example_input(saved)
    assert [tuple(t.shape) for t in x] == [(1, 3, 16, 16), (1, 1, 16, 16)]
