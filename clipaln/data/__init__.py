"""Datasets: typographic attacks, gender preference pairs, real datasets (the synthetic problem of
notebook 01, which builds PreferenceData, is clipaln.synthetic, after policy in the data flow)."""
