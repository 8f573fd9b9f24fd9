"""export: the normalized flow stream for other consumers (JSON lines over TCP, files)."""
