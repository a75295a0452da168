"""Intrinsic probes: find forget facts in hidden states (logit lens) and weights (traces)."""
