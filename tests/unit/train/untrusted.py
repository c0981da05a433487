"""A pickle payload for the checkpoint tests: unpickling it runs code that leaves a file behind."""

from __future__ import annotations


class WritesMarker:
    """Unpickling this calls ``open(marker, "w")``: the file appearing is code having run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))
