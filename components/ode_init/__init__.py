"""KFP component: ode_init."""
