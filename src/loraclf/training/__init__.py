"""Stage 5, making a run folder: recipe (setup -> fit -> finish), loop, adaptation, checkpoints, losses."""
