"""Datasets: typographic attacks, gender preference pairs, real datasets, synthetic features."""
