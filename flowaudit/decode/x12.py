"""ANSI X12 decoder shell: compiles schemas/catalog/x12.toml and runs kernels/x12.py envelopes and
the shared classifier (kernels/edifact.py ``classify_batch``)."""
from __future__ import annotations

import numpy as np

from flowaudit.kernels import x12 as _k

from . import FormatResult
from .edifact import load_rules, run_classify


# each message is classified on its own against a fixed location table: the pipeline may classify
# pieces of a selection side by side (pipeline.Classifier._pieces)
PIECEWISE = True


def classify_with(buf: np.ndarray, offsets: np.ndarray, sel: np.ndarray, compiled: dict) -> FormatResult:
    """Classify with an explicitly compiled rule set (tests, operators' own catalogues)."""
    return run_classify(_k.x12_envelopes, buf, offsets, sel, compiled)


def classify(buf: np.ndarray, offsets: np.ndarray, sel: np.ndarray) -> FormatResult:
    """Classify the X12 messages ``sel`` of the batch (see :mod:`flowaudit.decode`)."""
    return classify_with(buf, offsets, sel, load_rules("x12.toml"))


def tokenize(buf: np.ndarray, offsets: np.ndarray, sel: np.ndarray):
    """Token table of the X12 messages ``sel`` (see :func:`kernels.x12.tokenize`)."""
    c = load_rules("x12.toml")
    return _k.tokenize(np.ascontiguousarray(buf, dtype=np.uint8), np.ascontiguousarray(offsets, dtype=np.int64),
                       np.ascontiguousarray(sel, dtype=np.int64), c["max_seg"], c["max_tok"])
