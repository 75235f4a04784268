"""`python -m larrylab.requestlog`: the indexer process a router starts to store its journal."""

from larrylab.requestlog._indexer import main

main()
