"""Stage 6, beside deploy: hyperparameter search, trials trained through training/. Imports training and below."""
