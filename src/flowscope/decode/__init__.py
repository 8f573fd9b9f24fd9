"""decode: export messages (bytes) → record sets (numpy columns). No I/O in this package."""
