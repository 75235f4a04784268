"""The training-data flywheel: export rated threads, generate variations, filter, build a
dataset, fine-tune, and package the result for Ollama."""
