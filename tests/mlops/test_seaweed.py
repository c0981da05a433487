"""SeaweedServer lifecycle: generated keys enforced, own temp dir removed, SIGTERM→SIGKILL escalation,
data directory readable by its owner only."""

from __future__ import annotations

import stat
import urllib.error
import urllib.request

import pytest

from stream_r1.ops.seaweed import SeaweedServer
from stream_r1.ops.store import ArtifactStore

pytestmark = pytest.mark.s3


def test_two_servers_own_dirs_and_escalating_stop():
    a, b = SeaweedServer(stop_timeout_seconds=0.01), SeaweedServer()
    with a as ca, b as cb:
        assert ca.endpoint != cb.endpoint and ca.access_key != cb.access_key  # free ports, fresh keys
        ArtifactStore(ca, "life").ensure_bucket()
        with pytest.raises(urllib.error.HTTPError):  # unsigned requests are refused: keys are enforced
            urllib.request.urlopen(ca.url + "/life", timeout=5)
        dir_a = a.data_dir
        assert dir_a is not None and dir_a.exists()
    # a's 10 ms SIGTERM grace is shorter than weed's shutdown: it was SIGKILLed; both dirs are gone.
    assert not a.running and not b.running and not dir_a.exists()


def test_a_given_data_dir_is_made_owner_only(tmp_path):
    data = tmp_path / "seaweed"
    data.mkdir(mode=0o755)  # e.g. left by an older version: tightened on start
    data.chmod(0o755)
    with SeaweedServer(data):
        for d in (data, data / "data"):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, oct(d.stat().st_mode)
        assert stat.S_IMODE((data / "s3.json").stat().st_mode) == 0o600
