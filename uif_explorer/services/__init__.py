"""The service layer shared by the app and the CLI: models, data, pruning, export (no streamlit)."""
