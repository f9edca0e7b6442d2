"""The Klayers catalogue: its model, the HTTP client and cache, and the build planner."""
