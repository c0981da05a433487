"""KFP component: register_model."""
