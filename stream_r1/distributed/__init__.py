"""stream_r1.distributed: the only place that talks to ``torch.distributed``.

Everything degrades to identities at world size 1 without a process group.
"""
