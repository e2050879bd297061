"""Stage 5, beside training: opening a run or export folder, predicting, output files, evaluation."""
