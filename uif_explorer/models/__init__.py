"""Architectures of the sample models (PyTorch and Keras 3)."""
