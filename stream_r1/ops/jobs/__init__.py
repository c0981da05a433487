"""Job backends that run ``torchrun -m stream_r1 train ...``: local, PyTorchJob, TrainJob."""
