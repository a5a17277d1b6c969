"""Small helpers shared across the package (no registrations here)."""
