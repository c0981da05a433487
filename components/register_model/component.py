"""``register_model``: registers the exported student with its lineage."""

from kfp import dsl
from kfp.dsl import Input, Metrics

from components._shared.images import STREAM_R1_OPS_IMAGE


@dsl.component(base_image=STREAM_R1_OPS_IMAGE, install_kfp_package=False)
def register_model(export_uri: str, config_hash: str, metrics: Input[Metrics], registry: str, registry_uri: str,
                   model_name: str, data_revision: str, run_id: str, kfp_run_id: str, kfp_run_name: str) -> str:
    """Register the exported student at ``export_uri`` as ``model_name`` version ``run_id`` with lineage: run id,
    config hash, data revision, metrics, artifact URI, and provenance: the KFP run id and name and the namespace
    (``STREAM_R1_POD_NAMESPACE``, downward API). Reads strings and the small metrics file only (no weights).
    Idempotent: a retry returns the same version; the same version with another URI is refused (immutable).
    Returns ``"<name>:<version> -> <uri>"``.
    """
    import os

    from stream_r1.ops import steps

    info = steps.register_export(export_uri, config_hash, metrics.path, registry, registry_uri, model_name,
                                 data_revision, run_id, kfp_run_id=kfp_run_id, kfp_run_name=kfp_run_name,
                                 namespace=os.environ.get("STREAM_R1_POD_NAMESPACE", ""))
    return f"{info.name}:{info.version} -> {info.uri}"
