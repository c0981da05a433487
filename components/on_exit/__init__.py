"""KFP component: on_exit."""
