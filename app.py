"""UIF Explorer's Streamlit app: page config, session state, navigation. Start it with ./run.sh."""

import streamlit as st

from uif_explorer.ui import state

st.set_page_config(page_title="UIF Explorer", page_icon=":material/content_cut:", layout="wide")
state.init()

# One entry per page; the first visit lands on the default one. Later pages go in this list.
PAGES = [
    st.Page("pages/model.py", title="Model", icon=":material/memory:", default=True),
]

st.navigation(PAGES).run()
