"""Stage 1, the recipe: typed sections (schema), loading YAML and overrides (loading), the key reference."""
