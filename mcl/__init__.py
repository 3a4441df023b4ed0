"""mcl: mutual concept loss."""
