"""Kubernetes backends: PyTorchJob / TrainJob builders, the launcher and its waiter."""
