"""The sidebar's device choice: where the app's PyTorch jobs run (analysis, search, OFA search,
fine-tuning, latency; see uif_explorer/torch/device.py).

WHY in the sidebar: it is a property of the server the app runs on, not of one page; the
choice is read when a job starts, so a running job keeps its device.
"""

from __future__ import annotations

import streamlit as st
import torch

from uif_explorer.torch import device as dev

_LABELS = {"auto": "Automatic", "cpu": "CPU", "cuda": "CUDA GPU"}


def device_picker() -> None:
    """Render the choice (GPU only where PyTorch sees one) and apply it to new jobs."""
    has_cuda = torch.cuda.is_available()
    options = ["auto", "cpu", "cuda"] if has_cuda else ["auto", "cpu"]
    choice = st.sidebar.selectbox(
        "Device for jobs", options, key="job_device", format_func=_LABELS.__getitem__,
        help="Where analyses, searches, fine-tuning and latency runs of PyTorch models go. "
             "Automatic: a CUDA GPU when this server has one, else the CPU. Applies to jobs "
             "started from now on, for every session on this server.")
    st.sidebar.caption(f"Jobs run on: {dev.describe(dev.set_job_device(choice))}"
                       + ("" if has_cuda else " (no CUDA GPU on this server)"))
