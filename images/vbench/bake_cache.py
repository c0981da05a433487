"""Pre-download every VBench weight into $VBENCH_CACHE_DIR at image build time (needs network then).

VBench's evaluate(..., local=True) then runs offline: it only checks that the files exist. Run by the
Dockerfile; not part of the project's test suite (vbench cannot be installed in the project env).
"""

from __future__ import annotations

import os
import sys

DIMENSIONS = [
    "subject_consistency", "background_consistency", "temporal_flickering", "motion_smoothness",
    "dynamic_degree", "aesthetic_quality", "imaging_quality", "object_class", "multiple_objects",
    "human_action", "color", "spatial_relationship", "scene", "appearance_style", "temporal_style",
    "overall_consistency",
]


def main() -> int:
    cache = os.environ.get("VBENCH_CACHE_DIR")
    if not cache:
        print("VBENCH_CACHE_DIR must be set", file=sys.stderr)
        return 2
    from vbench.utils import init_submodules

    # local=False makes VBench wget / git clone each dimension's weights into VBENCH_CACHE_DIR.
    init_submodules(DIMENSIONS, local=False)
    # Tag2Text (scene) and GRiT (object dims) build a BERT tokenizer from the HF hub at model
    # construction: fetch it now into HF_HOME (inside the cache dir) so evaluation runs offline.
    from transformers import BertTokenizer

    BertTokenizer.from_pretrained("bert-base-uncased")
    print(f"VBench cache ready in {cache}: {sorted(os.listdir(cache))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
