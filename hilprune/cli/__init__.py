"""The `hilprune` CLI."""
