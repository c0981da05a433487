"""Model registries behind one interface: MLflow (embedded default), Kubeflow Model Registry."""
