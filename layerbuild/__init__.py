"""layerbuild: build, audit and publish AWS Lambda layers that work on their target runtime."""

__version__ = "0.1.0"
