"""``validate_run``: the pipeline's first step."""
