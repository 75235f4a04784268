"""Importers: conversation history kept elsewhere (Larry's Chainlit database and its rating
records) brought into the store as threads with transcripts, ratings and lineage, once."""

from larrylab.importers._bots import DEFAULT_BOT_CATEGORIES, BotMap, BotMapError, load_bot_map
from larrylab.importers._chainlit import ChainlitSourceError, open_source, parse_time
from larrylab.importers._chainlit import count_threads as count_chainlit_threads
from larrylab.importers._importer import ImportOptions, ImportSummary, import_chainlit
from larrylab.importers._ratings import RatingsFileError

__all__ = [
    "DEFAULT_BOT_CATEGORIES",
    "BotMap",
    "BotMapError",
    "ChainlitSourceError",
    "ImportOptions",
    "ImportSummary",
    "RatingsFileError",
    "count_chainlit_threads",
    "import_chainlit",
    "load_bot_map",
    "open_source",
    "parse_time",
]
