"""Example handlers with real models (optional extras)."""
