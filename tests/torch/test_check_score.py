"""The one score check serves PyTorch, Keras/TensorFlow and plain numbers alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uif_explorer.core.scores import check_score


class TFLike:
    """Stands for a tf.Tensor: a ``.numpy()`` method and no ``.detach()``."""

    def __init__(self, value: np.ndarray) -> None:
        self.value = value

    def numpy(self) -> np.ndarray:
        return self.value


def test_tensors_of_either_framework_and_numbers_become_floats() -> None:
    assert check_score(torch.tensor([91.5], requires_grad=True)) == 91.5
    assert check_score(TFLike(np.array(0.75, dtype=np.float32))) == 0.75
    assert check_score(np.int64(3)) == 3.0 and check_score(2) == 2.0


@pytest.mark.parametrize("value, error, text", [
    (TFLike(np.ones(3)), ValueError, "a tensor of shape (3,)"),
    (np.ones((2, 2)), ValueError, "an array of shape (2, 2)"),
    (np.complex64(1 + 2j), TypeError, "must return a finite number"),
    (TFLike(np.array(True)), TypeError, "must return a finite number"),
    ("90", TypeError, "must return a finite number"),
    (float("nan"), ValueError, "must return a finite number"),
])
def test_bad_scores_are_refused_with_the_reason(value, error, text) -> None:
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        check_score(value, "eval_fn")
