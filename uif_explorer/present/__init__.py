"""Plotly figures and notebook tables of workspace files: the same pictures in app and Jupyter."""
