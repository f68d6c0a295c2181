"""Goodness-of-fit helpers for the sampling tests (no SciPy needed)."""

import math

import numpy as np


def chi2_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X ~ chi-square(dof), Wilson-Hilferty normal approximation."""
    z = ((statistic / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))


def chi2_goodness_of_fit(counts: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> float:
    """p-value of observed counts against exact probabilities; rare cells are pooled."""
    counts, probs = counts.reshape(-1).astype(np.float64), probs.reshape(-1).astype(np.float64)
    expected = counts.sum() * probs / probs.sum()
    rare = expected < min_expected
    observed = np.append(counts[~rare], counts[rare].sum())
    expected = np.append(expected[~rare], expected[rare].sum())
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    statistic = float(((observed - expected) ** 2 / expected).sum())
    return chi2_sf(statistic, len(expected) - 1)


def chi2_two_sample(counts_a: np.ndarray, counts_b: np.ndarray) -> float:
    """p-value that two count vectors come from one distribution (cells empty in both dropped)."""
    a, b = counts_a.reshape(-1).astype(np.float64), counts_b.reshape(-1).astype(np.float64)
    keep = (a + b) > 0
    a, b = a[keep], b[keep]
    ka, kb = math.sqrt(b.sum() / a.sum()), math.sqrt(a.sum() / b.sum())
    statistic = float(((ka * a - kb * b) ** 2 / (a + b)).sum())
    return chi2_sf(statistic, len(a) - 1)


def total_variation(counts: np.ndarray, probs: np.ndarray) -> float:
    freqs = counts.reshape(-1) / counts.sum()
    return 0.5 * float(np.abs(freqs - probs.reshape(-1) / probs.sum()).sum())
