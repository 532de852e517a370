"""Validate, score and merge submission files. Stands alone: imports no other room."""
