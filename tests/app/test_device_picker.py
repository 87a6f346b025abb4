"""The sidebar's device choice (ui/device.py) sets where new PyTorch jobs run."""

from __future__ import annotations

import torch
from streamlit.testing.v1 import AppTest

from uif_explorer.torch import device as dev


def _picker() -> None:
    from uif_explorer.ui.device import device_picker

    device_picker()


def test_sidebar_offers_the_devices_there_are_and_applies_the_choice():
    try:
        at = AppTest.from_function(_picker).run()
        box = at.sidebar.selectbox(key="job_device")
        assert box.options == (["Automatic", "CPU", "CUDA GPU"] if torch.cuda.is_available()
                               else ["Automatic", "CPU"])
        assert dev.job_device() == dev.resolve_device("auto")
        at = box.set_value("cpu").run()
        assert dev.job_device() == torch.device("cpu")
        assert "Jobs run on: CPU (" in at.sidebar.caption[0].value
    finally:
        dev.set_job_device(None)
