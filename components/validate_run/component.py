"""``validate_run``: fails the run in seconds, before any GPU is requested, when its settings cannot work."""

from kfp import dsl

from components._shared.images import STREAM_R1_OPS_IMAGE


@dsl.component(base_image=STREAM_R1_OPS_IMAGE, install_kfp_package=False)
def validate_run(config: str, overrides: list, backend: str, registry: str, registry_uri: str, eval_prompts: str,
                 run_id: str, job_id: str, bucket: str, num_nodes: int, gpus_per_node: int, nproc_per_node: int,
                 node_selector: dict, tolerations: list, runs_pvc: str, train_image: str, queue_name: str,
                 priority_class: str, shared_dir: str) -> str:
    """Check the run's settings together (:mod:`stream_r1.ops.run_checks`): config and batch split, the
    training job built offline, registry persistence, backend, prompts, store keys. Returns a summary line;
    raises listing every problem.
    """
    import os

    from stream_r1.ops import run_checks
    from stream_r1.ops.k8s.launcher import cluster_settings

    cluster = cluster_settings(os.environ, image=train_image, pvc_name=runs_pvc, pvc_mount_path=shared_dir,
                               node_selector=node_selector, tolerations=tolerations, queue_name=queue_name,
                               priority_class=priority_class, gpus_per_node=gpus_per_node)
    settings = run_checks.RunSettings(
        config=config, overrides=tuple(overrides), backend=backend, registry=registry, registry_uri=registry_uri,
        eval_prompts=eval_prompts, run_id=run_id, job_id=job_id, num_nodes=int(num_nodes),
        gpus_per_node=int(gpus_per_node), nproc_per_node=int(nproc_per_node), cluster=cluster)
    return run_checks.validate_run(settings, bucket, os.environ)
