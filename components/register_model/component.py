"""``register_model``: registers the exported student with its lineage."""

from kfp import dsl
from kfp.dsl import Input, Metrics, Model

from components._shared.images import STREAM_R1_OPS_IMAGE


@dsl.component(base_image=STREAM_R1_OPS_IMAGE, install_kfp_package=False)
def register_model(run: Input[Model], metrics: Input[Metrics], registry: str, registry_uri: str, model_name: str,
                   data_revision: str, run_id: str) -> str:
    """Register ``run``'s exported student (its S3 URI) as ``model_name`` version ``run_id`` with lineage:
    run id, config hash, data revision, metrics, artifact URI. Idempotent: a retry returns the same version.
    Returns ``"<name>:<version> -> <uri>"``.
    """
    from stream_r1.ops import steps

    info = steps.register_from_artifacts(run.path, dict(run.metadata), metrics.path, registry, registry_uri,
                                         model_name, data_revision, run_id)
    return f"{info.name}:{info.version} -> {info.uri}"
