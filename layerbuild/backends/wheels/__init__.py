"""The Docker-free backend: uv resolution, the index, wheel choice, the wheel store, installs."""
