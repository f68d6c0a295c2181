"""Measurements behind the product's decisions (experiments/README.md); run as python -m experiments.NAME."""
