"""Ray actors, one role each, and the groups the drivers call (imports ray)."""
