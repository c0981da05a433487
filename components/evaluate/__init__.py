"""KFP component: evaluate."""
