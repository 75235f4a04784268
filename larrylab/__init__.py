"""larrylab: an evaluation-first A/B experimentation platform for Larry, the PWS coach."""

__version__ = "0.1.0"
