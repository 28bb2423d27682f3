"""Pictures people would rather see than read: loss curves (more plots arrive with later issues)."""
