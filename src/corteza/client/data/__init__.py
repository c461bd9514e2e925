"""Data on the user's PC: datasets, file formats, synthetic data, metrics, plots."""
