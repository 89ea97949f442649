"""vmforge: a hackable full-system emulator and VMM."""
__version__ = "0.1.0"
