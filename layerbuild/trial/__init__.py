"""Trying a layer before it ships: smoke tests, sample events, local invoke."""
