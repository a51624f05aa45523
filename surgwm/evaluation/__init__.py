"""Frozen evaluation: the case split, clip labels, feature sources, probes, metrics, and the comparison report."""
