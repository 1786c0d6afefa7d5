"""Smoke runs of the benchmarks in bench/ (figures are never pass/fail thresholds)."""
