"""Offline check of a pod spec against the Kubernetes Pod Security Standard "restricted" (v1.33).

Profile namespaces of Kubeflow clusters are commonly labelled
``pod-security.kubernetes.io/enforce: restricted``; a pod that fails it is rejected at admission, after
the training job was created, so every pod template this project writes or builds is checked here
first (tests run it over ``manifests/`` and over the launcher's jobs). The rules are the policy's
published controls, baseline included; Windows pods are not considered.
"""

from __future__ import annotations

from typing import Any

# Volume types "restricted" allows (every other type, hostPath included, is rejected).
ALLOWED_VOLUME_TYPES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
})
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})
ALLOWED_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
ADDABLE_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def _profile_errors(where: str, field: str, profile: dict[str, Any] | None, allowed: tuple[str, ...]) -> list[str]:
    if profile and profile.get("type") not in allowed:
        return [f"{where}: securityContext.{field}.type={profile.get('type')!r} must be one of {', '.join(allowed)}"]
    return []


def _selinux_errors(where: str, opts: dict[str, Any] | None) -> list[str]:
    if not opts:
        return []
    errors = []
    if opts.get("type", "") not in ALLOWED_SELINUX_TYPES:
        errors.append(f"{where}: securityContext.seLinuxOptions.type={opts['type']!r} is not allowed")
    errors += [f"{where}: securityContext.seLinuxOptions.{k} must not be set" for k in ("user", "role") if opts.get(k)]
    return errors


def restricted_violations(pod_spec: dict[str, Any], where: str = "pod") -> list[str]:
    """Every "restricted" control the pod spec violates.

    Args:
        pod_spec: A ``v1/PodSpec`` dict (camelCase), e.g. ``template["spec"]``.
        where: Prefix of the messages (the template's name or path).

    Returns:
        One ``"<where>[/<container>]: <what> ..."`` line per violation; empty = admitted.
    """
    errors: list[str] = []
    psc = pod_spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(key):
            errors.append(f"{where}: {key} must not be true")
    for vol in pod_spec.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            errors.append(f"{where}: volume {vol.get('name')!r} of type {sorted(kinds - ALLOWED_VOLUME_TYPES)} "
                          f"is not allowed (allowed: {', '.join(sorted(ALLOWED_VOLUME_TYPES))})")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            errors.append(f"{where}: sysctl {sysctl.get('name')!r} is not in the safe set")
    if psc.get("runAsUser") == 0:
        errors.append(f"{where}: securityContext.runAsUser must not be 0")
    errors += _selinux_errors(where, psc.get("seLinuxOptions"))
    errors += _profile_errors(where, "appArmorProfile", psc.get("appArmorProfile"), ("RuntimeDefault", "Localhost"))
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ("RuntimeDefault", "Localhost"):
        errors.append(f"{where}: securityContext.seccompProfile.type={pod_seccomp!r} must be RuntimeDefault or Localhost")
    pod_non_root = psc.get("runAsNonRoot") is True

    for list_key in _CONTAINER_LISTS:
        for c in pod_spec.get(list_key) or []:
            cw = f"{where}/{c.get('name', '?')}"
            sc = c.get("securityContext") or {}
            if sc.get("privileged"):
                errors.append(f"{cw}: securityContext.privileged must not be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{cw}: securityContext.allowPrivilegeEscalation must be false")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                errors.append(f"{cw}: securityContext.capabilities.drop must include ALL")
            added = set(caps.get("add") or []) - ADDABLE_CAPABILITIES
            if added:
                errors.append(f"{cw}: securityContext.capabilities.add {sorted(added)} is not allowed "
                              "(only NET_BIND_SERVICE)")
            if sc.get("runAsNonRoot") is False or not (pod_non_root or sc.get("runAsNonRoot") is True):
                errors.append(f"{cw}: runAsNonRoot must be true (pod or container securityContext)")
            if sc.get("runAsUser") == 0:
                errors.append(f"{cw}: securityContext.runAsUser must not be 0")
            seccomp = (sc.get("seccompProfile") or {}).get("type")
            if seccomp is not None and seccomp not in ("RuntimeDefault", "Localhost"):
                errors.append(f"{cw}: securityContext.seccompProfile.type={seccomp!r} must be RuntimeDefault or "
                              "Localhost")
            elif seccomp is None and pod_seccomp is None:
                errors.append(f"{cw}: seccompProfile.type must be RuntimeDefault or Localhost (pod or container)")
            if sc.get("procMount", "Default") != "Default":
                errors.append(f"{cw}: securityContext.procMount must be Default")
            errors += _selinux_errors(cw, sc.get("seLinuxOptions"))
            errors += _profile_errors(cw, "appArmorProfile", sc.get("appArmorProfile"), ("RuntimeDefault", "Localhost"))
            for port in c.get("ports") or []:
                if port.get("hostPort"):
                    errors.append(f"{cw}: hostPort {port['hostPort']} is not allowed")
    return errors
