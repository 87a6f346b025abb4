"""Plotly figures and notebook tables of workspace files: the same pictures in the app and Jupyter."""
