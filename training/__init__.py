"""Training and evaluation: sources, speaker-disjoint splits, the loop, metrics."""
