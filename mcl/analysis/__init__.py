"""The `mcl analyse` stage: representation analyses and the pre-registered decisions."""
