"""The router's HTTP API (FastAPI)."""
