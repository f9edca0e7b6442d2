"""Importing a layer in a fresh interpreter of its target Python (local, QEMU or Docker)."""
