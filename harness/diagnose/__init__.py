"""Diagnostics of raw model outputs: loops, truncation, unknown names, invented coordinates.

>>> from harness.diagnose import diagnose, Diagnosis, FLAGS
"""

from harness.diagnose.core import FLAGS, Diagnosis, diagnose

__all__ = ["FLAGS", "Diagnosis", "diagnose"]
