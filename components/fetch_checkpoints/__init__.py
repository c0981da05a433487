"""KFP component: fetch_checkpoints."""
