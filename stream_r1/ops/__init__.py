"""The MLOps layer: S3 artifact store, job backends, model registries, KFP/DVC glue.

May import kfp, kubernetes, minio, dvc, mlflow and model_registry; nothing in the core imports it.
"""
