"""A model with nothing to prune gets the engine's one line in the app (issue 18 item 5): the
Model page shows it beside the channel groups, the Sensitivity and One-step pages show it
instead of an analysis or a search that would fail. The model is one convolution whose
output is the network's output, uploaded as a ``torch.export`` program."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from streamlit.testing.v1 import AppTest
from torch import nn

APP = "../../app.py"
OCTET = "application/octet-stream"
LINE = "No channel group of this model can be pruned; frozen: "



def test_an_unprunable_upload_says_why_in_one_line(root: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3)).eval()  # its channels are the output
    buf = io.BytesIO()
    torch.export.save(torch.export.export(model, (torch.randn(1, 1, 28, 28),)), buf)
    at = AppTest.from_file(APP, default_timeout=240).run()
    at.file_uploader(key="up_pt2").set_value(("conv.pt2", buf.getvalue(), OCTET))
    at.run()
    at.button(key="up_pt2_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith(LINE), errors
    assert "(feeds a model output)" in errors[0] and "\n" not in errors[0]
    assert "Model** page lists every group" in errors[0]
    assert [df.value for df in at.dataframe if "layers" in df.value.columns]  # table still shown
    for page in ("pages/sensitivity.py", "pages/one_step.py"):
        at.switch_page(page).run()
        assert not at.exception
        assert [e.value for e in at.error] == errors
        assert not at.button  # no analysis or search to start
