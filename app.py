"""UIF Explorer's Streamlit app: page config, session state, navigation. Start it with ./run.sh."""

import sys

import streamlit as st

from uif_explorer.ui import device, state, workspace

# Background jobs are Python threads in this process: hand the GIL over every 1 ms (not 5) so
# the server thread answers health checks and serves pages promptly (bench/load_test.py).
sys.setswitchinterval(0.001)
st.set_page_config(page_title="UIF Explorer", page_icon=":material/content_cut:", layout="wide")
state.init()
workspace.current_token()  # the session's workspace id goes into the URL on every page
device.device_picker()  # where PyTorch jobs run (CUDA when present)

# One entry per page; the first visit lands on the default one. Later pages go in this list.
PAGES = [
    st.Page("pages/model.py", title="Model", icon=":material/memory:", default=True),
    st.Page("pages/sensitivity.py", title="Sensitivity", icon=":material/show_chart:"),
    st.Page("pages/one_step.py", title="One-step", icon=":material/scatter_plot:"),
    st.Page("pages/ofa.py", title="OFA Pareto", icon=":material/stacked_line_chart:"),
    st.Page("pages/export.py", title="Export", icon=":material/download:"),
]

st.navigation(PAGES).run()
