"""Studies that train models outside the pipeline: learnability, reproducibility, power, dose-response."""
