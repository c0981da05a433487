"""DCP's metadata may pickle its enum as ``getattr(Enum, "NAME")``; only that form of getattr loads.

Debian's CPython 3.11.2 (the images' Python) writes DCP's ``_MEM_FORMAT_ENCODING`` members this way,
while 3.11.7 calls the class with the value (both checked with pickletools): a checkpoint written in
the train image must read back, and a ``getattr`` on anything but an allow-listed enum stays refused.
"""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from torch.distributed.checkpoint.metadata import _MEM_FORMAT_ENCODING

from stream_r1.distributed.dcp_io import _AllowListUnpickler


class _ViaGetattr:
    def __init__(self, target: object, name: str) -> None:
        self.target, self.name = target, name

    def __reduce__(self):
        return getattr, (self.target, self.name)


def _load(obj: object) -> object:
    return _AllowListUnpickler(io.BytesIO(pickle.dumps(obj))).load()


def test_enum_member_by_getattr_loads() -> None:
    member = _load(_ViaGetattr(_MEM_FORMAT_ENCODING, "TORCH_CONTIGUOUS_FORMAT"))
    assert member is _MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT


@pytest.mark.parametrize(("target", "name"), [(torch.Size, "__class__"), (_MEM_FORMAT_ENCODING, "__init__"),
                                              (_MEM_FORMAT_ENCODING, "_missing_")])
def test_getattr_on_anything_else_is_refused(target: object, name: str) -> None:
    with pytest.raises(pickle.UnpicklingError, match="not an enum member"):
        _load(_ViaGetattr(target, name))
