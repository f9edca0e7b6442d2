"""The build cache, the bytecode cache and pruning."""
