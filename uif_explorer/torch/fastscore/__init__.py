"""Faster sensitivity analysis: a group pruned alone is scored by running only the layers it
changes, from activations of the unchanged part recorded once (see ``docs/analysis-speed.md``).
"""

from uif_explorer.torch.fastscore.graph import available_bytes, suggest_batch_size
from uif_explorer.torch.fastscore.scorer import ReuseScorer, fast_scores, reuse_scorer

__all__ = ["ReuseScorer", "available_bytes", "fast_scores", "reuse_scorer",
           "suggest_batch_size"]
