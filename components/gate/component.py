"""``gate``: decides whether the evaluated student may be registered."""

from kfp import dsl
from kfp.dsl import Input, Metrics

from components._shared.images import STREAM_R1_OPS_IMAGE


@dsl.component(base_image=STREAM_R1_OPS_IMAGE, install_kfp_package=False)
def gate(metrics: Input[Metrics], metric: str, min_value: float, registry: str, registry_uri: str,
         model_name: str) -> bool:
    """True when ``metric >= min_value`` and it is not worse than the latest registered version's value."""
    from stream_r1.ops import steps

    values = steps.read_metrics(metrics.path, dict(metrics.metadata))
    passed, reason = steps.gate(values, metric, min_value, steps.make_registry(registry, registry_uri), model_name)
    print(f"gate: {'PASS' if passed else 'FAIL'}: {reason}")
    return passed
