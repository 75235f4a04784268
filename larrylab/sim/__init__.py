"""larrylab sim: a simulated LLM upstream that speaks the real wire protocols.

OpenAI `/v1/chat/completions` (JSON and SSE), Ollama `/api/chat` (JSON and NDJSON) and Gemini's
native `models/{model}:generateContent` / `:streamGenerateContent` (JSON and SSE), with
configurable latency, time to first token, decode speed, errors, hangs and dropped streams,
answering from a corpus of PWS coach replies. Always labelled as simulated: the banner, the
`system_fingerprint` (`larrylab-sim:<label>`) and an `x-larrylab-sim` header on every
response say so.
"""

from larrylab.pws import CATEGORIES
from larrylab.sim.app import create_app, serve
from larrylab.sim.background import BackgroundSim, run_in_background
from larrylab.sim.config import SimConfig
from larrylab.sim.corpus import PWS_REPLIES
from larrylab.sim.schema_instance import instance_for_schema

__all__ = [
    "CATEGORIES",
    "PWS_REPLIES",
    "BackgroundSim",
    "SimConfig",
    "create_app",
    "instance_for_schema",
    "run_in_background",
    "serve",
]
