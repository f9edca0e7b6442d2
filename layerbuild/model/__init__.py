"""What the stages pass each other: runtimes, recipes, locks, manifests, errors, limits (pure)."""
