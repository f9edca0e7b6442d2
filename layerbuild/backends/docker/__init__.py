"""The docker backend: the engine client and builds in the Lambda build image."""
