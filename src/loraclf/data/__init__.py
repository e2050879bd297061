"""Stage 2, labelled text: reading sources, labels, splits, token ids and batches. Imports config."""
