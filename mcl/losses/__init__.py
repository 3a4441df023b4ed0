"""Losses: task (CE / soft IoU), shared-subspace, sparse autoencoder, and the weighted manager."""
