"""Serving a Hugging Face model folder with `transformers serve`, to put behind the router.

with start_model_server("runs/larry-v2/merged") as server:
    server.base_url, server.model   # the `models:` entry: api openai, base_url, model
"""

from larrylab.serving._folder import ModelFolderError, check_model_folder
from larrylab.serving._server import (
    ModelServer,
    ServeModelError,
    check_serving_installed,
    start_model_server,
)

__all__ = [
    "ModelFolderError",
    "ModelServer",
    "ServeModelError",
    "check_model_folder",
    "check_serving_installed",
    "start_model_server",
]
