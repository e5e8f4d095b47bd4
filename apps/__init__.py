"""Demo apps, one pattern per file."""
