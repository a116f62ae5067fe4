"""Data loading and validation (`loading`, `text`), and the built-in synthetic world (`synthetic`)."""
