"""The ground floor: atomic file writes and safe torch loads (files), the on-disk memo of
computed results (cache) and seeds derived from names (seeds). Imports nothing else of
sddlib, so every other package may use it.
"""
