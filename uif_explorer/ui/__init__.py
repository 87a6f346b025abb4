"""Streamlit glue of the app: session state, cached loaders and reusable page parts.

Only this package and ``pages/`` import streamlit; the numbers they show come from
non-streamlit modules (``uif_explorer.services`` and the engine), so they can be tested alone.
"""
