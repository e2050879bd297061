"""Stage 3, beside model: classification metrics and their plots, on arrays. Imports nothing of loraclf's but errors."""
