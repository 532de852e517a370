"""Training: augmentation, datasets, the training loop and cross-validation. Imports ``models`` and ``preprocessing``."""
