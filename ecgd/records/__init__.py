"""Readers: one module per file format, all returning :class:`Recording`."""
