"""Task-inference model: encoders, bottleneck, sparse autoencoder, executor, adapters."""
