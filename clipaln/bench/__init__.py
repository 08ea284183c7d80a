"""Benchmarks as plain dicts (the CLI prints them as JSON), one module per thing measured:

- results: the typographic results table (the paper's Table 1 in the toy world) and the tour;
- paper: the paper's Table 1 protocol on real datasets, beside the authors' logged numbers;
- tuning: W's schedule chosen on validation, and each default W's spectrum and dial;
- retrieval: the gender track over seeds, and the phase diagram of the gender regime;
- ablation: the reviewers' ablations; adversarial: the paper's App. K;
- timing: cached features against the encoder in the loop, slider updates, streaming encoding;
- paper_claims: the paper's claims against the toy world; records: recorded results read back.

Every public name is here too (`from clipaln import bench; bench.claims(...)`).
"""

from .ablation import ABLATION, DATA_SIZES, ablation_table, largest_gap
from .adversarial import ADVERSARIAL, ADVERSARIAL_LRS, PGD_EPS, adversarial_table
from .paper import DATASETS as PAPER_DATASETS
from .paper import markdown as paper_markdown
from .paper import paper_table
from .paper import row_writer as paper_row_writer
from .paper_claims import PAPER_FIGURES, PO, claims, claims_markdown, claims_run
from .records import made_with, provenance, recorded
from .results import ROWS, format_table, mean_and_spread, table_frame, tour, typographic_table
from .retrieval import PAPER_CROSSING, REGIME_ALIGNMENTS, gender_table, regime_table
from .timing import encode_bench, encode_once, measure_model, slider_update_ms, speed
from .tuning import BEFORE, TUNED, dial_table, tune_table

__all__ = [
    "ABLATION", "ADVERSARIAL", "ADVERSARIAL_LRS", "BEFORE", "DATA_SIZES", "PAPER_CROSSING", "PAPER_DATASETS",
    "PAPER_FIGURES", "PGD_EPS", "PO", "REGIME_ALIGNMENTS", "ROWS", "TUNED", "ablation_table", "adversarial_table",
    "claims", "claims_markdown", "claims_run", "dial_table", "encode_bench", "encode_once", "format_table",
    "gender_table", "largest_gap", "made_with", "mean_and_spread", "measure_model", "paper_markdown",
    "paper_row_writer", "paper_table", "provenance", "recorded", "regime_table", "slider_update_ms", "speed",
    "table_frame", "tour", "tune_table", "typographic_table",
]  # fmt: skip
