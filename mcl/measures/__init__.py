"""Measures of learned representations: CKA, subspace distances, probes, sparse features, the manipulation check."""
