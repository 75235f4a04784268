"""The `larrylab` command line."""

from larrylab.cli._main import app, main
from larrylab.cli._render import render_arms
from larrylab.cli._training import lineage_for

__all__ = ["app", "lineage_for", "main", "render_arms"]
