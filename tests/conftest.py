"""Shared test setup.

torch is imported first so that TensorFlow never loads before it in the test process
(environment.md: loading ``torch._dynamo`` after TensorFlow can crash).
"""

import torch  # noqa: F401
