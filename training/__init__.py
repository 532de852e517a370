"""Training: augmentation, datasets, the model zoo and the checkpoint format. Imports ``preprocessing`` only."""
