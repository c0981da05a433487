"""The ONE place the component images are pinned (so a release changes one constant, and no component hard-codes an image).

``images/`` (Dockerfiles) and ``manifests/`` must use the same tags; a test checks it. Bump the tag
together with the package version: the KFP v2 cache key uses the image *name*, not its digest
(kubeflow/pipelines#13862), so a re-pushed mutable tag would serve stale cached outputs.
"""

STREAM_R1_OPS_IMAGE = "ghcr.io/stream-r1/stream-r1-ops:0.1.0"
"""CPU image with stream_r1[ops] (kfp, minio, mlflow, ...): runs every launcher/bookkeeping step."""

STREAM_R1_TRAIN_IMAGE = "ghcr.io/stream-r1/stream-r1-train:0.1.0"
"""GPU image with stream_r1 + torch/CUDA: runs the training job (PyTorchJob/TrainJob) and evaluation."""
