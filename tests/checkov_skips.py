"""checkov findings on chart-rendered objects that we accept, each with its reason: the only place they are
listed. tests/test_checkov.py asserts checkov's failures are exactly these, so a new finding fails the test and
a fixed one must be removed from here.

The program's own objects are not listed here: they carry their skips on the object
(`checkov.io/skip1` annotations), with the reason next to the code that makes them.

Two sorts, told apart by how each reason starts:
  - "Upstream:" the chart renders it so and no value changes it, or the component needs it to work;
  - "Values could:" a chart value would change it; the reason says why it is left as it is for now.
"""

from __future__ import annotations

KARPENTER = "Deployment.kube-system.karpenter"
DEVICE_PLUGIN = "DaemonSet.kube-system.neuron-device-plugin"
KUBE_STATE_METRICS = "Deployment.monitoring.kube-state-metrics"
GRAFANA = "Deployment.monitoring.grafana"

CHART_SKIPS: dict[tuple[str, str], str] = {
    # Karpenter controller (chart karpenter 1.14.1).
    ("CKV_K8S_38", KARPENTER):
        "Upstream: the controller watches and writes the API (nodes, NodeClaims, pods); its token is mounted by "
        "`automountServiceAccountToken: true` hard-coded in templates/deployment.yaml.",
    ("CKV_K8S_11", KARPENTER):
        "Values could: controller.resources.limits.cpu. No CPU limit on purpose: a throttled controller "
        "launches nodes late during a scheduling burst; it requests 500m and is limited in memory (1Gi).",
    # Neuron device plugin (neuron-helm-chart 1.5.0, templates/device-plugin/device-plugin-daemonset.yaml).
    ("CKV_K8S_38", DEVICE_PLUGIN):
        "Upstream: the plugin reads nodes and pods and patches node status through the API (its ClusterRole); "
        "the chart has no value to change the token mount, and the plugin needs it.",
    ("CKV_K8S_8", DEVICE_PLUGIN):
        "Upstream: the template has no liveness probe and no value for one; the plugin serves gRPC on a unix "
        "socket that kubelet watches (kubelet re-registers a plugin whose socket goes away).",
    ("CKV_K8S_9", DEVICE_PLUGIN):
        "Upstream: the template has no readiness probe and no value for one; a DaemonSet pod serves no traffic.",
    ("CKV_K8S_43", DEVICE_PLUGIN):
        "Upstream: the image is `repository:tag` (_helpers.tpl neuron-device-plugin.fullimage), no digest value; "
        "the tag is pinned by the chart version.",
    ("CKV_K8S_23", DEVICE_PLUGIN):
        "Upstream: the plugin runs as root to create its socket in kubelet's root-owned "
        "/var/lib/kubelet/device-plugins and read /run (hostPath); a non-root user would break registration.",
    ("CKV_K8S_40", DEVICE_PLUGIN):
        "Upstream: runs as root (UID 0) for the same reason as CKV_K8S_23.",
    ("CKV_K8S_10", DEVICE_PLUGIN):
        "Values could: devicePlugin.resources (the chart's default is none). Not set until measured on a "
        "Neuron node: an OOM-killed device plugin withdraws the devices from the node.",
    ("CKV_K8S_11", DEVICE_PLUGIN):
        "Values could: devicePlugin.resources.limits.cpu; not set until measured (see CKV_K8S_10).",
    ("CKV_K8S_12", DEVICE_PLUGIN):
        "Values could: devicePlugin.resources.requests.memory; not set until measured (see CKV_K8S_10).",
    ("CKV_K8S_13", DEVICE_PLUGIN):
        "Values could: devicePlugin.resources.limits.memory; not set until measured (see CKV_K8S_10).",
    ("CKV_K8S_15", DEVICE_PLUGIN):
        "Values could: devicePlugin.image.pullPolicy Always. Left IfNotPresent (the chart's): the tag is "
        "pinned, and a node-critical DaemonSet should not need the registry to restart.",
    ("CKV_K8S_22", DEVICE_PLUGIN):
        "Values could: devicePlugin.securityContext.readOnlyRootFilesystem (setting it replaces the chart's "
        "allowPrivilegeEscalation: false and drop ALL, which must then be repeated). Not verified on a Neuron "
        "node yet.",
    ("CKV_K8S_29", DEVICE_PLUGIN):
        "Values could: devicePlugin.podSecurityContext (empty in the chart, so no pod securityContext renders); "
        "see CKV_K8S_31.",
    ("CKV_K8S_31", DEVICE_PLUGIN):
        "Values could: devicePlugin.podSecurityContext.seccompProfile RuntimeDefault. Not verified on a Neuron "
        "node yet.",
    # kube-state-metrics (chart kube-state-metrics 8.4.0).
    ("CKV_K8S_38", KUBE_STATE_METRICS):
        "Upstream: kube-state-metrics lists and watches the API's objects to turn them into metrics; it needs "
        "its service account token.",
    ("CKV_K8S_43", KUBE_STATE_METRICS):
        "Upstream: the image is registry.k8s.io/...:v2.20.0 by tag (the chart's image.sha is empty); the tag is "
        "pinned by the chart version and digests cannot be resolved offline.",
    # Grafana (chart grafana 12.11.1).
    ("CKV_K8S_43", GRAFANA):
        "Upstream: the image is pinned by tag in components/versions.py (image.sha could take a digest once "
        "pulled; digests cannot be resolved offline).",
    ("CKV_K8S_35", GRAFANA):
        "Upstream: the chart passes the admin user and password from admin.existingSecret as environment "
        "variables (GF_SECURITY_ADMIN_*), which is how Grafana reads them.",
    ("CKV_K8S_22", GRAFANA):
        "Values could: containerSecurityContext.readOnlyRootFilesystem. Grafana writes its search index under "
        "/var/lib/grafana-search and plugins under /var/lib/grafana; not verified on a cluster, so left writable "
        "(non-root, no capabilities, no privilege escalation).",
    ("CKV_K8S_40", GRAFANA):
        "Values could: securityContext.runAsUser above 10000. The image's files belong to UID 472 (the chart's "
        "default user); another UID is not verified to start.",
}
