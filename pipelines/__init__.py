"""KFP pipeline definitions (compiled YAML in ``pipelines/compiled/``)."""
