"""The time-bounded inference kernel that writes ``submission.csv``. Nothing imports this package."""
