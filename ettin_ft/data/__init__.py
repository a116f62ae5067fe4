"""Data loading and validation (`loading`), and the built-in synthetic world (`synthetic`)."""
