"""Shared component settings: the pinned images (images.py) and the GPU placement of a step (resources.py)."""
