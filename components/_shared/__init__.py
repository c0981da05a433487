"""Shared component settings (the one pinned image constant)."""
