//! The Kubernetes manifests under `deploy/`: `kubectl kustomize` renders the base and each
//! overlay, the objects are parsed into k8s-openapi's types, and they must give the agent what
//! it needs and no more (deploy/README.md says why each setting is there).
//!
//! Needs `kubectl` on PATH (`cargo xtask bootstrap` installs Debian's kubernetes-client when
//! there is none); `KUBECTL=/path/to/kubectl` picks another one, e.g. to check that kubectl
//! 1.20's kustomize v2.0.3 renders the same objects as kustomize v5.
//!
//! `deploy/monitoring/` (alerting rules, their promtool tests, a Grafana dashboard) is checked
//! with `promtool` (`cargo xtask bootstrap` unpacks Debian's; `PROMTOOL=/path` picks another)
//! and against a real scrape of the agent's `/metrics`.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Container, Namespace, PodSpec, SecurityContext, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Subject};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_norway::Value;

const NAMESPACE: &str = "oomtrace";
const NAME: &str = "oomtrace";
const IMAGE: &str = "ghcr.io/oomtrace/oomtrace:0.1.0";
const METRICS_PORT: i32 = 9742;
/// The host directories the agent reads and where they are mounted: at their own paths, but
/// the host's /proc (a container's own /proc cannot be covered), which `OOMTRACE_PROC_ROOT`
/// names.
/// Of the host's /var/log, only the kubelet's log tree: the namer reads the directory and
/// symlink names of `pods/` and `containers/` under `--host-log-dir` (default /var/log).
const HOST_MOUNTS: [(&str, &str); 6] = [
    ("/sys/fs/cgroup", "/sys/fs/cgroup"),
    ("/sys/kernel/btf", "/sys/kernel/btf"),
    ("/sys/kernel/tracing", "/sys/kernel/tracing"),
    ("/var/log/pods", "/var/log/pods"),
    ("/var/log/containers", "/var/log/containers"),
    ("/proc", "/host/proc"),
];
/// The host's bpffs, mounted writable at its own path: the agent pins its programs there.
const BPFFS: &str = "/sys/fs/bpf";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Base,
    Privileged,
    Events,
}

const VARIANTS: [Variant; 3] = [Variant::Base, Variant::Privileged, Variant::Events];

impl Variant {
    fn dir(self) -> &'static str {
        match self {
            Variant::Base => "base",
            Variant::Privileged => "overlays/privileged",
            Variant::Events => "overlays/events",
        }
    }
}

/// The objects of one rendered kustomization: exactly one of each kind.
#[derive(Clone, Debug)]
struct Rendered {
    variant: Variant,
    namespace: Namespace,
    service_account: ServiceAccount,
    cluster_role: ClusterRole,
    binding: ClusterRoleBinding,
    daemon_set: DaemonSet,
    service: Service,
}

impl Rendered {
    fn pod_spec(&self) -> &PodSpec {
        self.daemon_set
            .spec
            .as_ref()
            .and_then(|spec| spec.template.spec.as_ref())
            .unwrap_or_else(|| panic!("{:?}: the DaemonSet has no pod spec", self.variant))
    }

    /// The agent's container: the only one, named oomtrace.
    fn agent(&self) -> &Container {
        let containers = &self.pod_spec().containers;
        assert_eq!(
            containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            [NAME],
            "{:?}: the pod must have exactly the agent's container",
            self.variant
        );
        &containers[0]
    }

    fn agent_security(&self) -> &SecurityContext {
        self.agent()
            .security_context
            .as_ref()
            .unwrap_or_else(|| panic!("{:?}: the agent has no securityContext", self.variant))
    }

    fn rules(&self) -> &[PolicyRule] {
        self.cluster_role.rules.as_deref().unwrap_or_default()
    }
}

fn rendered(variant: Variant) -> &'static Rendered {
    static BASE: OnceLock<Rendered> = OnceLock::new();
    static PRIVILEGED: OnceLock<Rendered> = OnceLock::new();
    static EVENTS: OnceLock<Rendered> = OnceLock::new();
    let cell = match variant {
        Variant::Base => &BASE,
        Variant::Privileged => &PRIVILEGED,
        Variant::Events => &EVENTS,
    };
    cell.get_or_init(|| parse(variant, &kustomize(variant)))
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `$KUBECTL`, else `kubectl` from PATH.
fn kubectl() -> PathBuf {
    if let Some(kubectl) = std::env::var_os("KUBECTL").filter(|k| !k.is_empty()) {
        return kubectl.into();
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("kubectl"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "kubectl is not on PATH: run `cargo xtask bootstrap` (it installs Debian's \
                 kubernetes-client) or install kubectl"
            )
        })
}

/// `kubectl kustomize deploy/<variant>`: the rendered multi-document YAML.
fn kustomize(variant: Variant) -> String {
    let kubectl = kubectl();
    let dir = deploy_dir().join(variant.dir());
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", kubectl.display()));
    assert!(
        out.status.success(),
        "`{} kustomize {}` failed ({}): {}",
        kubectl.display(),
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8(out.stdout).expect("kubectl kustomize printed non-UTF-8")
}

/// Parses every document into its k8s-openapi type, dispatching on `kind`.
fn parse(variant: Variant, yaml: &str) -> Rendered {
    let mut namespace = None;
    let mut service_account = None;
    let mut cluster_role = None;
    let mut binding = None;
    let mut daemon_set = None;
    let mut service = None;
    for document in serde_norway::Deserializer::from_str(yaml) {
        let value = Value::deserialize(document)
            .unwrap_or_else(|e| panic!("{variant:?}: the rendered YAML does not parse: {e}"));
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{variant:?}: an object without a kind: {value:?}"))
            .to_owned();
        match kind.as_str() {
            "Namespace" => put(variant, &mut namespace, value),
            "ServiceAccount" => put(variant, &mut service_account, value),
            "ClusterRole" => put(variant, &mut cluster_role, value),
            "ClusterRoleBinding" => put(variant, &mut binding, value),
            "DaemonSet" => put(variant, &mut daemon_set, value),
            "Service" => put(variant, &mut service, value),
            other => panic!("{variant:?}: unexpected object of kind {other}"),
        }
    }
    fn take<T>(variant: Variant, slot: Option<T>, kind: &str) -> T {
        slot.unwrap_or_else(|| panic!("{variant:?}: no {kind} was rendered"))
    }
    Rendered {
        variant,
        namespace: take(variant, namespace, "Namespace"),
        service_account: take(variant, service_account, "ServiceAccount"),
        cluster_role: take(variant, cluster_role, "ClusterRole"),
        binding: take(variant, binding, "ClusterRoleBinding"),
        daemon_set: take(variant, daemon_set, "DaemonSet"),
        service: take(variant, service, "Service"),
    }
}

/// Deserializes `value` into `slot`, which must be empty, and checks that serializing it
/// again gives `value` back: a field the API does not know (a typo, or one newer than the
/// k8s-openapi version feature) would be dropped silently by the deserializer.
fn put<T>(variant: Variant, slot: &mut Option<T>, value: Value)
where
    T: DeserializeOwned + Serialize + k8s_openapi::Resource,
{
    let object: T = serde_norway::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{variant:?}: not a valid {}: {e}", T::KIND));
    let again = serde_norway::to_value(&object).expect("k8s-openapi objects serialize");
    if let Some(path) = first_difference(&value, &again, "") {
        panic!(
            "{variant:?}: the {} has a field that the Kubernetes API (k8s-openapi, v1_33) does \
             not know or reads otherwise, at {path}",
            T::KIND
        );
    }
    assert!(
        slot.replace(object).is_none(),
        "{variant:?}: more than one {} was rendered",
        T::KIND
    );
}

/// The first path at which `a` and `b` differ (`spec.template.spec.volumes[0].hostPath`), or
/// None when they are equal.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    let at = |key: &dyn std::fmt::Display| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    let name = |key: &Value| {
        key.as_str()
            .map_or_else(|| format!("{key:?}"), str::to_owned)
    };
    match (a, b) {
        (Value::Mapping(a), Value::Mapping(b)) => a
            .iter()
            .find_map(|(key, value)| match b.get(key) {
                Some(other) => first_difference(value, other, &at(&name(key))),
                None => Some(at(&name(key))),
            })
            .or_else(|| {
                b.keys()
                    .find(|key| !a.contains_key(*key))
                    .map(|key| at(&name(key)))
            }),
        (Value::Sequence(a), Value::Sequence(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (a, b))| first_difference(a, b, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(if path.is_empty() {
            "the top".into()
        } else {
            path.into()
        }),
    }
}

/// Asserts that `actual` renders the same objects as `expected`, naming the first difference.
fn assert_same_objects(actual: &Rendered, expected: &Rendered, what: &str) {
    fn to<T: Serialize>(object: &T) -> Value {
        serde_norway::to_value(object).expect("k8s-openapi objects serialize")
    }
    fn values(r: &Rendered) -> [(&'static str, Value); 6] {
        [
            ("Namespace", to(&r.namespace)),
            ("ServiceAccount", to(&r.service_account)),
            ("ClusterRole", to(&r.cluster_role)),
            ("ClusterRoleBinding", to(&r.binding)),
            ("DaemonSet", to(&r.daemon_set)),
            ("Service", to(&r.service)),
        ]
    }
    for ((kind, actual), (_, expected)) in values(actual).into_iter().zip(values(expected)) {
        if let Some(path) = first_difference(&actual, &expected, "") {
            panic!("{what}: the {kind} differs at {path}");
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn pods_read_only() -> PolicyRule {
    PolicyRule {
        api_groups: Some(strings(&[""])),
        resources: Some(strings(&["pods"])),
        verbs: strings(&["get", "list", "watch"]),
        ..Default::default()
    }
}

fn events_create() -> PolicyRule {
    PolicyRule {
        api_groups: Some(strings(&["", "events.k8s.io"])),
        resources: Some(strings(&["events"])),
        verbs: strings(&["create"]),
        ..Default::default()
    }
}

#[test]
fn every_variant_renders_one_of_each_object_in_the_oomtrace_namespace() {
    for variant in VARIANTS {
        let r = rendered(variant);
        assert_eq!(
            r.namespace.metadata.name.as_deref(),
            Some(NAMESPACE),
            "{variant:?}: the Namespace"
        );
        let labels = r.namespace.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("pod-security.kubernetes.io/enforce")
                .map(String::as_str),
            Some("privileged"),
            "{variant:?}: the namespace must admit the agent's hostPath volumes and capabilities"
        );
        let namespaced = [
            ("ServiceAccount", &r.service_account.metadata),
            ("DaemonSet", &r.daemon_set.metadata),
            ("Service", &r.service.metadata),
        ];
        for (kind, meta) in namespaced {
            assert_eq!(
                meta.namespace.as_deref(),
                Some(NAMESPACE),
                "{variant:?}: the {kind} must be in namespace {NAMESPACE}"
            );
        }
        let cluster_scoped = [
            ("ClusterRole", &r.cluster_role.metadata),
            ("ClusterRoleBinding", &r.binding.metadata),
        ];
        for (kind, meta) in cluster_scoped {
            assert_eq!(
                meta.namespace, None,
                "{variant:?}: the {kind} is cluster-scoped"
            );
        }
        for (kind, meta) in namespaced.iter().chain(&cluster_scoped) {
            let labels = meta.labels.clone().unwrap_or_default();
            assert_eq!(
                labels.get("app.kubernetes.io/name").map(String::as_str),
                Some("oomtrace"),
                "{variant:?}: the {kind} must carry app.kubernetes.io/name"
            );
        }
    }
}

#[test]
fn base_agent_is_root_with_only_the_six_capabilities_it_uses() {
    let r = rendered(Variant::Base);
    let sc = r.agent_security();
    assert_eq!(sc.run_as_user, Some(0), "the agent must run as uid 0");
    assert_eq!(sc.privileged, Some(false), "the base is not privileged");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let caps = sc.capabilities.clone().unwrap_or_default();
    assert_eq!(
        caps.drop.unwrap_or_default(),
        ["ALL"],
        "every capability is dropped before adding"
    );
    assert_eq!(
        caps.add
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(
            [
                "BPF",
                "PERFMON",
                "SYS_RESOURCE",
                "SYS_PTRACE",
                "DAC_READ_SEARCH",
                "SYS_NICE"
            ]
            .map(String::from)
        ),
        "the agent gets exactly CAP_BPF, CAP_PERFMON, CAP_SYS_RESOURCE, CAP_SYS_PTRACE, \
         CAP_DAC_READ_SEARCH and CAP_SYS_NICE"
    );
    assert_eq!(
        sc.seccomp_profile, None,
        "the container keeps the pod's seccomp profile"
    );
    let pod_seccomp = r
        .pod_spec()
        .security_context
        .as_ref()
        .and_then(|psc| psc.seccomp_profile.as_ref())
        .map(|profile| profile.type_.as_str());
    assert_eq!(
        pod_seccomp,
        Some("RuntimeDefault"),
        "the pod runs under the runtime's default seccomp profile"
    );
}

#[test]
fn no_variant_shares_the_hosts_namespaces() {
    for variant in VARIANTS {
        let spec = rendered(variant).pod_spec();
        assert_ne!(spec.host_pid, Some(true), "{variant:?}: no hostPID");
        assert_ne!(spec.host_network, Some(true), "{variant:?}: no hostNetwork");
        assert_ne!(spec.host_ipc, Some(true), "{variant:?}: no hostIPC");
    }
}

#[test]
fn privileged_overlay_changes_only_privileged_and_escalation() {
    let base = rendered(Variant::Base);
    let privileged = rendered(Variant::Privileged);
    let sc = privileged.agent_security();
    assert_eq!(sc.privileged, Some(true), "the overlay's one purpose");
    assert_eq!(
        sc.allow_privilege_escalation,
        Some(true),
        "the API server rejects privileged with allowPrivilegeEscalation false"
    );

    let mut undone = privileged.clone();
    let container = undone
        .daemon_set
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
        .and_then(|pod| pod.containers.first_mut())
        .and_then(|c| c.security_context.as_mut())
        .expect("the privileged overlay keeps the agent's securityContext");
    container.privileged = Some(false);
    container.allow_privilege_escalation = Some(false);
    assert_same_objects(
        &undone,
        base,
        "the privileged overlay may change only privileged and allowPrivilegeEscalation",
    );
}

#[test]
fn events_overlay_adds_only_the_flag_and_events_create() {
    let base = rendered(Variant::Base);
    let events = rendered(Variant::Events);
    assert_eq!(
        events.agent().args.as_deref().unwrap_or_default(),
        ["agent", "--k8s-events"],
        "the events overlay turns the agent's Events on"
    );
    assert_eq!(
        events.rules(),
        [pods_read_only(), events_create()],
        "the events overlay adds create on events (core and events.k8s.io) to pods read-only"
    );

    let mut undone = events.clone();
    if let Some(rules) = undone.cluster_role.rules.as_mut() {
        rules.retain(|rule| *rule != events_create());
    }
    if let Some(args) = undone
        .daemon_set
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
        .and_then(|pod| pod.containers.first_mut())
        .and_then(|c| c.args.as_mut())
    {
        args.retain(|arg| arg != "--k8s-events");
    }
    assert_same_objects(
        &undone,
        base,
        "the events overlay may change only the agent's args and the ClusterRole's rules",
    );
}

#[test]
fn base_and_privileged_may_not_touch_events() {
    for variant in [Variant::Base, Variant::Privileged] {
        let r = rendered(variant);
        assert_eq!(
            r.rules(),
            [pods_read_only()],
            "{variant:?}: the ClusterRole grants exactly pods get/list/watch"
        );
        assert_eq!(
            r.agent().args.as_deref().unwrap_or_default(),
            ["agent"],
            "{variant:?}: the agent posts no Events unless overlays/events asks"
        );
    }
}

#[test]
fn host_paths_are_mounted_read_only_where_the_agent_reads_them() {
    for variant in VARIANTS {
        let r = rendered(variant);
        let volumes = r.pod_spec().volumes.as_deref().unwrap_or_default();
        let host_paths: BTreeMap<&str, &str> = volumes
            .iter()
            .map(|v| {
                let host_path = v
                    .host_path
                    .as_ref()
                    .unwrap_or_else(|| panic!("{variant:?}: volume {} is not a hostPath", v.name));
                assert_eq!(
                    host_path.type_.as_deref(),
                    Some("Directory"),
                    "{variant:?}: {} must be an existing directory",
                    host_path.path
                );
                (v.name.as_str(), host_path.path.as_str())
            })
            .collect();
        assert_eq!(
            host_paths.values().copied().collect::<BTreeSet<_>>(),
            HOST_MOUNTS
                .iter()
                .map(|(host, _)| *host)
                .chain([BPFFS])
                .collect(),
            "{variant:?}: the host paths the agent reads, bpffs, and no others"
        );
        let mounts = r.agent().volume_mounts.as_deref().unwrap_or_default();
        assert_eq!(
            mounts.len(),
            HOST_MOUNTS.len() + 1,
            "{variant:?}: one mount per volume"
        );
        for mount in mounts {
            if host_paths.get(mount.name.as_str()) == Some(&BPFFS) {
                assert_eq!(
                    mount.mount_path, BPFFS,
                    "{variant:?}: bpffs at its own path"
                );
                assert_ne!(
                    mount.read_only,
                    Some(true),
                    "{variant:?}: the agent pins in bpffs"
                );
                continue;
            }
            let host = host_paths
                .get(mount.name.as_str())
                .unwrap_or_else(|| panic!("{variant:?}: mount of unknown volume {}", mount.name));
            let at = HOST_MOUNTS
                .iter()
                .find_map(|(h, at)| (h == host).then_some(*at))
                .unwrap_or_default();
            assert_eq!(
                mount.mount_path, at,
                "{variant:?}: {host} must be mounted at {at}"
            );
            assert_eq!(
                mount.read_only,
                Some(true),
                "{variant:?}: {host} must be read-only"
            );
            assert_eq!(
                mount.recursive_read_only.as_deref(),
                Some("IfPossible"),
                "{variant:?}: {host}'s submounts must be read-only where the node can"
            );
            assert_eq!(
                mount.sub_path, None,
                "{variant:?}: {host} whole, no subPath"
            );
        }
        let proc_root = r
            .agent()
            .env
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|e| e.name == "OOMTRACE_PROC_ROOT")
            .and_then(|e| e.value.as_deref());
        assert_eq!(
            proc_root,
            Some("/host/proc"),
            "{variant:?}: the agent reads the host's procfs where it is mounted"
        );
    }
}

#[test]
fn runs_on_every_node_as_guaranteed_and_node_critical() {
    for variant in VARIANTS {
        let r = rendered(variant);
        let spec = r.pod_spec();
        let tolerates_all = spec
            .tolerations
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|t| {
                t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()
            });
        assert!(
            tolerates_all,
            "{variant:?}: a toleration `operator: Exists` without key or effect lets the agent \
             run on every node, tainted and control-plane nodes included"
        );
        assert_eq!(
            spec.priority_class_name.as_deref(),
            Some("system-node-critical"),
            "{variant:?}"
        );
        assert!(spec.node_selector.is_none(), "{variant:?}: every node");
        assert!(spec.affinity.is_none(), "{variant:?}: every node");
        let containers = spec
            .containers
            .iter()
            .chain(spec.init_containers.as_deref().unwrap_or_default());
        for container in containers {
            let resources = container.resources.clone().unwrap_or_default();
            let requests = resources.requests.unwrap_or_default();
            let limits = resources.limits.unwrap_or_default();
            assert!(
                requests.contains_key("cpu") && requests.contains_key("memory"),
                "{variant:?}: container {} must request cpu and memory",
                container.name
            );
            assert_eq!(
                requests, limits,
                "{variant:?}: container {}'s requests must equal its limits (Guaranteed QoS)",
                container.name
            );
        }
    }
}

#[test]
fn agent_serves_metrics_and_probes_and_knows_its_node() {
    for variant in VARIANTS {
        let r = rendered(variant);
        let agent = r.agent();
        assert_eq!(agent.image.as_deref(), Some(IMAGE), "{variant:?}");
        assert_eq!(agent.command, None, "{variant:?}: the image's entrypoint");
        assert_eq!(
            agent
                .args
                .as_deref()
                .unwrap_or_default()
                .first()
                .map(String::as_str),
            Some("agent"),
            "{variant:?}"
        );
        let ports = agent.ports.as_deref().unwrap_or_default();
        assert!(
            ports.iter().any(|p| p.name.as_deref() == Some("metrics")
                && p.container_port == METRICS_PORT
                && p.protocol.as_deref() == Some("TCP")
                && p.host_port.is_none()),
            "{variant:?}: container port {METRICS_PORT}/TCP named metrics, no hostPort: {ports:?}"
        );
        let probes = [
            ("liveness", &agent.liveness_probe, "/healthz"),
            ("readiness", &agent.readiness_probe, "/readyz"),
        ];
        for (which, probe, path) in probes {
            let get = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .unwrap_or_else(|| panic!("{variant:?}: no HTTP {which} probe"));
            assert_eq!(get.path.as_deref(), Some(path), "{variant:?}: {which}");
            assert!(
                matches!(&get.port, IntOrString::String(name) if name == "metrics")
                    || get.port == IntOrString::Int(METRICS_PORT),
                "{variant:?}: the {which} probe must hit the metrics port, not {:?}",
                get.port
            );
        }
        let node_name = agent
            .env
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|e| e.name == "NODE_NAME")
            .and_then(|e| e.value_from.as_ref())
            .and_then(|from| from.field_ref.as_ref())
            .map(|field| field.field_path.as_str());
        assert_eq!(
            node_name,
            Some("spec.nodeName"),
            "{variant:?}: NODE_NAME from the downward API"
        );
        let annotations = r
            .daemon_set
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        assert_eq!(
            annotations.get("prometheus.io/scrape").map(String::as_str),
            Some("true"),
            "{variant:?}"
        );
        assert_eq!(
            annotations.get("prometheus.io/port").map(String::as_str),
            Some(METRICS_PORT.to_string().as_str()),
            "{variant:?}"
        );
    }
}

#[test]
fn binding_gives_the_agents_service_account_its_cluster_role() {
    for variant in VARIANTS {
        let r = rendered(variant);
        let account = r.service_account.metadata.name.as_deref();
        assert_eq!(
            r.pod_spec().service_account_name.as_deref(),
            account,
            "{variant:?}: the DaemonSet runs as the rendered ServiceAccount"
        );
        assert_ne!(
            r.pod_spec().automount_service_account_token,
            Some(false),
            "{variant:?}: the agent needs its token to watch pods"
        );
        let role_ref = &r.binding.role_ref;
        assert_eq!(
            (
                role_ref.api_group.as_str(),
                role_ref.kind.as_str(),
                Some(role_ref.name.as_str())
            ),
            (
                "rbac.authorization.k8s.io",
                "ClusterRole",
                r.cluster_role.metadata.name.as_deref()
            ),
            "{variant:?}: the binding must name the rendered ClusterRole"
        );
        assert_eq!(
            r.binding.subjects.as_deref().unwrap_or_default(),
            [Subject {
                kind: "ServiceAccount".into(),
                name: account.unwrap_or_default().into(),
                namespace: Some(NAMESPACE.into()),
                api_group: None,
            }],
            "{variant:?}: the binding binds the agent's ServiceAccount and nothing else"
        );
    }
}

#[test]
fn metrics_service_is_headless_and_selects_the_agent() {
    for variant in VARIANTS {
        let r = rendered(variant);
        assert_eq!(
            r.service.metadata.name.as_deref(),
            Some("oomtrace-metrics"),
            "{variant:?}"
        );
        let spec = r.service.spec.clone().unwrap_or_default();
        assert_eq!(
            spec.cluster_ip.as_deref(),
            Some("None"),
            "{variant:?}: headless, one endpoint per agent"
        );
        let ports = spec.ports.unwrap_or_default();
        assert_eq!(ports.len(), 1, "{variant:?}: {ports:?}");
        assert_eq!(ports[0].port, METRICS_PORT, "{variant:?}");
        assert_eq!(
            ports[0].target_port,
            Some(IntOrString::String("metrics".into())),
            "{variant:?}"
        );
        let ds_spec = r
            .daemon_set
            .spec
            .as_ref()
            .expect("the DaemonSet has a spec");
        let pod_labels = ds_spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let selects_pods = |selector: &BTreeMap<String, String>| {
            !selector.is_empty()
                && selector
                    .iter()
                    .all(|(key, value)| pod_labels.get(key) == Some(value))
        };
        let service_selector = spec.selector.unwrap_or_default();
        assert!(
            selects_pods(&service_selector),
            "{variant:?}: the Service selector {service_selector:?} must match the agent's pods \
             {pod_labels:?}"
        );
        let ds_selector = ds_spec.selector.match_labels.clone().unwrap_or_default();
        assert!(
            selects_pods(&ds_selector),
            "{variant:?}: the DaemonSet selector {ds_selector:?} must match its pod template \
             {pod_labels:?}"
        );
    }
}

#[test]
fn image_runs_the_agent_as_root() {
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile"))
        .expect("deploy/Dockerfile is readable");
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let runtime_stage: Vec<&str> = instructions
        .iter()
        .rev()
        .take_while(|l| !l.starts_with("FROM "))
        .copied()
        .collect();
    let runtime_from = instructions
        .iter()
        .rev()
        .find(|l| l.starts_with("FROM "))
        .expect("the Dockerfile has a FROM");
    assert_eq!(*runtime_from, "FROM ${RUNTIME_IMAGE}");
    // Global build arguments (before the first FROM): every base image pinned by digest.
    let arg = |name: &str| {
        instructions
            .iter()
            .take_while(|l| !l.starts_with("FROM "))
            .find_map(|l| l.strip_prefix(&format!("ARG {name}=")))
            .unwrap_or_else(|| panic!("no global ARG {name} with a default"))
    };
    let pinned = |image: &str, repository: &str| {
        let digest = image
            .strip_prefix(repository)
            .and_then(|rest| rest.strip_prefix("@sha256:"))
            .unwrap_or_else(|| panic!("{image} must be {repository}@sha256:<digest>"));
        assert!(
            digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "{image}: not a sha256 digest"
        );
    };
    // distroless's root variant: the agent runs as uid 0.
    pinned(arg("RUNTIME_IMAGE"), "gcr.io/distroless/cc-debian12");
    pinned(arg("BUILD_IMAGE"), "docker.io/library/debian:bookworm");
    let froms: Vec<&str> = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .copied()
        .collect();
    // The binary comes from the build stage, or (`cargo xtask image`, BINARY_FROM=prebuilt)
    // from a context holding just it; the build stage is the default.
    assert_eq!(
        froms,
        [
            "FROM ${BUILD_IMAGE} AS build",
            "FROM scratch AS prebuilt",
            "FROM ${BINARY_FROM} AS binary",
            "FROM ${RUNTIME_IMAGE}"
        ]
    );
    assert_eq!(arg("BINARY_FROM"), "build");
    assert!(
        runtime_stage.contains(&"COPY --from=binary /out/oomtrace /usr/local/bin/oomtrace"),
        "{runtime_stage:?}"
    );
    // No script piped into a shell; rustup-init checked before it runs.
    let text = instructions.join("\n");
    let piped_into_shell = text.split('|').skip(1).any(|after| {
        let command = after.split_whitespace().next().unwrap_or_default();
        matches!(
            command,
            "sh" | "bash" | "dash" | "zsh" | "/bin/sh" | "/bin/bash"
        )
    });
    assert!(!piped_into_shell, "nothing may be piped into a shell");
    let check = text
        .find("sha256sum -c")
        .expect("rustup-init's checksum is checked");
    let run = text.find("/tmp/rustup-init -y").expect("rustup-init runs");
    assert!(check < run, "checked before it runs");
    let sha = instructions
        .iter()
        .find_map(|l| l.strip_prefix("ARG RUSTUP_INIT_SHA256="))
        .expect("rustup-init's SHA-256 is pinned");
    assert!(
        sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
        "{sha}"
    );
    assert!(
        !runtime_stage.iter().any(|l| l.starts_with("USER ")),
        "the runtime stage must not switch user"
    );
    assert!(runtime_stage.contains(&r#"ENTRYPOINT ["/usr/local/bin/oomtrace"]"#));
    assert!(runtime_stage.contains(&r#"CMD ["agent"]"#));
    let ignore = std::fs::read_to_string(deploy_dir().join("Dockerfile.dockerignore"))
        .expect("deploy/Dockerfile.dockerignore is readable");
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        "the build context must leave out target/"
    );
}

/// `deploy/monitoring/`: the alerting rules, plain and as a PrometheusRule, their promtool unit
/// tests, and the Grafana dashboard; checked with promtool and against a real scrape of the
/// agent.
mod monitoring {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use oomtrace::cgroup::MemoryHierarchy;
    use oomtrace::testing::sandbox::{MemoryCgroup, SpawnOptions};
    use serde_norway::Value;

    use crate::common::{self, agent::AgentProcess, killed_by, start_hog, systemd_pod};
    use crate::deploy_dir;

    const RULES: &str = "oomtrace-rules.yaml";
    const PROMETHEUS_RULE: &str = "prometheusrule.yaml";
    const RULE_TESTS: &str = "oomtrace-rules.test.yaml";
    const SERVICE_MONITOR: &str = "servicemonitor.yaml";
    const DASHBOARD: &str = "grafana-dashboard.json";
    /// The job the rules select the agents by (servicemonitor.yaml and the README's scrape
    /// config name it so).
    const JOB: &str = "oomtrace";
    /// Labels Prometheus puts on every scraped series: the promtool inputs carry these besides
    /// the agent's own.
    const TARGET_LABELS: [&str; 2] = ["job", "instance"];
    /// What the issue asks the rules to cover, by alert name.
    const ALERTS: [&str; 7] = [
        "OomtraceMemoryNearLimit",
        "OomtraceOOMKill",
        "OomtraceMemoryThrashing",
        "OomtraceKillsUnrecorded",
        "OomtraceRecordsLost",
        "OomtraceAgentDown",
        "OomtraceAgentAbsent",
    ];
    /// Families whose series exist only after something the test does not provoke, and the
    /// family whose label names they share (one format in output/metrics.rs renders them):
    /// a container's thrashing series appears once it has thrashed.
    const LABELS_LIKE: [(&str, &str); 1] = [(
        "oomtrace_memory_thrashing_seconds_total",
        "oomtrace_memory_working_set_ratio",
    )];

    fn dir() -> PathBuf {
        deploy_dir().join("monitoring")
    }

    fn read(name: &str) -> String {
        let path = dir().join(name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    fn yaml(name: &str) -> Value {
        serde_norway::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// `$PROMTOOL`, else `promtool` from PATH.
    fn promtool() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("PROMTOOL").filter(|p| !p.is_empty()) {
            return Some(p.into());
        }
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("promtool"))
                .find(|candidate| candidate.is_file())
        })
    }

    /// Runs `promtool ARGS` in `cwd`, panicking with its output unless it succeeds.
    fn promtool_ok(promtool: &Path, args: &[&str], cwd: &Path) -> String {
        let out = Command::new(promtool)
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "`promtool {}` in {} failed ({}):\n{text}",
            args.join(" "),
            cwd.display(),
            out.status
        );
        text
    }

    /// A scratch directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("oomtrace-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("scratch dir");
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Every `expr` string anywhere in `value` (rules: `groups[].rules[].expr`; the dashboard:
    /// `panels[].targets[].expr`), with the dashboard's variable queries.
    fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }

    fn rule_exprs() -> Vec<String> {
        let rules: serde_json::Value =
            serde_norway::from_str(&read(RULES)).expect("the rules parse");
        let mut out = Vec::new();
        exprs(&rules, &mut out);
        out
    }

    fn dashboard() -> serde_json::Value {
        serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
    }

    fn dashboard_exprs() -> Vec<String> {
        let mut out = Vec::new();
        exprs(&dashboard(), &mut out);
        out
    }

    /// The dashboard's queries with Grafana's variables replaced by values, as PromQL.
    fn without_grafana_variables(expr: &str) -> String {
        [
            ("$__rate_interval", "5m"),
            ("$__interval", "1m"),
            ("$__range", "6h"),
            ("$namespace", ".*"),
        ]
        .iter()
        .fold(expr.to_string(), |e, (var, value)| e.replace(var, value))
    }

    #[test]
    fn prometheus_rule_is_the_plain_rule_file() {
        let plain = yaml(RULES);
        let object = yaml(PROMETHEUS_RULE);
        assert_eq!(
            object.get("apiVersion").and_then(Value::as_str),
            Some("monitoring.coreos.com/v1")
        );
        assert_eq!(
            object.get("kind").and_then(Value::as_str),
            Some("PrometheusRule")
        );
        let meta = object.get("metadata").expect("metadata");
        assert_eq!(
            meta.get("namespace").and_then(Value::as_str),
            Some(crate::NAMESPACE)
        );
        let spec = object.get("spec").expect("a spec");
        if let Some(path) = crate::first_difference(&plain, spec, "") {
            panic!("{PROMETHEUS_RULE}'s spec and {RULES} differ at {path}");
        }
    }

    #[test]
    fn rules_alert_on_what_the_issue_asks_and_each_alert_is_tested_both_ways() {
        let rules = yaml(RULES);
        let rules: Vec<&Value> = rules["groups"]
            .as_sequence()
            .expect("groups")
            .iter()
            .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
            .collect();
        let by_name: BTreeMap<&str, &Value> = rules
            .iter()
            .map(|r| (r["alert"].as_str().expect("alerting rules only"), *r))
            .collect();
        assert_eq!(
            by_name.keys().copied().collect::<BTreeSet<_>>(),
            ALERTS.into_iter().collect(),
            "the alerts"
        );
        let near = by_name["OomtraceMemoryNearLimit"];
        let expr = near["expr"].as_str().expect("expr");
        assert!(
            expr.contains("oomtrace_memory_working_set_ratio") && expr.ends_with("> 0.75"),
            "the working set against 0.75 of the limit: {expr}"
        );
        assert_eq!(near["for"].as_str(), Some("5m"));
        let down = by_name["OomtraceAgentDown"]["expr"].as_str().expect("expr");
        assert_eq!(down, format!("up{{job=\"{JOB}\"}} == 0"));
        for rule in &rules {
            assert!(
                rule["labels"]["severity"].as_str().is_some(),
                "a severity: {rule:?}"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some()
                    && rule["annotations"]["description"].as_str().is_some(),
                "a summary and a description: {rule:?}"
            );
        }
        // Every alert has a promtool case where it fires and one where it must not.
        let tests = yaml(RULE_TESTS);
        let mut fires = BTreeSet::new();
        let mut quiet = BTreeSet::new();
        for case in tests["tests"].as_sequence().expect("tests") {
            for check in case["alert_rule_test"]
                .as_sequence()
                .expect("alert_rule_test")
            {
                let name = check["alertname"].as_str().expect("alertname");
                match check["exp_alerts"].as_sequence().map(Vec::len) {
                    Some(0) | None => quiet.insert(name),
                    Some(_) => fires.insert(name),
                };
            }
        }
        for alert in ALERTS {
            assert!(
                fires.contains(alert),
                "no promtool case where {alert} fires"
            );
            assert!(
                quiet.contains(alert),
                "no promtool case where {alert} must stay quiet"
            );
        }
    }

    #[test]
    fn service_monitor_scrapes_the_agents_service_as_job_oomtrace() {
        let monitor = yaml(SERVICE_MONITOR);
        assert_eq!(
            monitor["kind"].as_str(),
            Some("ServiceMonitor"),
            "{monitor:?}"
        );
        let service = &crate::rendered(crate::Variant::Base).service;
        let service_labels = service.metadata.labels.clone().unwrap_or_default();
        let selector = monitor["spec"]["selector"]["matchLabels"]
            .as_mapping()
            .expect("matchLabels");
        assert!(!selector.is_empty());
        for (key, value) in selector {
            let key = key.as_str().expect("label name");
            assert_eq!(
                service_labels.get(key).map(String::as_str),
                value.as_str(),
                "the selector's {key} must match the Service oomtrace-metrics"
            );
        }
        // The job is the value of the Service label that jobLabel names.
        let job_label = monitor["spec"]["jobLabel"].as_str().expect("jobLabel");
        assert_eq!(
            service_labels.get(job_label).map(String::as_str),
            Some(JOB),
            "job={JOB}, which the rules select"
        );
        let ports: Vec<&str> = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| p.name.as_deref())
            .collect();
        let endpoints = monitor["spec"]["endpoints"]
            .as_sequence()
            .expect("endpoints");
        assert_eq!(endpoints.len(), 1);
        let port = endpoints[0]["port"].as_str().expect("port");
        assert!(ports.contains(&port), "port {port} of {ports:?}");
        // The agent's namespace/pod/container labels name the workload: the target's own
        // must not take their place.
        let drops = endpoints[0]["relabelings"]
            .as_sequence()
            .expect("relabelings")
            .iter()
            .find(|r| r["action"].as_str() == Some("labeldrop"))
            .and_then(|r| r["regex"].as_str())
            .expect("a labeldrop");
        let dropped = regex::Regex::new(&format!("^(?:{drops})$")).expect("regex");
        for label in ["namespace", "pod", "container"] {
            assert!(dropped.is_match(label), "{label} must be dropped: {drops}");
        }
    }

    #[test]
    fn promtool_checks_the_rules_and_the_dashboard_and_passes_the_rule_tests() {
        let Some(promtool) = promtool() else {
            eprintln!(
                "SKIPPED: promtool is not on PATH (`cargo xtask bootstrap` unpacks Debian's, \
                 or set PROMTOOL)"
            );
            return;
        };
        let scratch = Scratch::new("promtool");
        promtool_ok(&promtool, &["check", "rules", RULES], &dir());
        let spec = yaml(PROMETHEUS_RULE)["spec"].clone();
        let spec_file = scratch.0.join("prometheusrule-spec.yaml");
        std::fs::write(
            &spec_file,
            serde_norway::to_string(&spec).expect("serialize"),
        )
        .expect("write");
        let checked = promtool_ok(
            &promtool,
            &["check", "rules", spec_file.to_str().expect("UTF-8")],
            &dir(),
        );
        assert!(
            checked.contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
            "{checked}"
        );
        let tested = promtool_ok(&promtool, &["test", "rules", RULE_TESTS], &dir());
        assert!(tested.contains("SUCCESS"), "{tested}");
        // The dashboard's queries, as recording rules, parse.
        let queries = dashboard_exprs();
        assert!(queries.len() >= 20, "{} queries", queries.len());
        let rules: Vec<serde_json::Value> = queries
            .iter()
            .filter(|q| !q.starts_with("label_values("))
            .enumerate()
            .map(|(i, q)| {
                serde_json::json!({
                    "record": format!("dashboard:query_{i}"),
                    "expr": without_grafana_variables(q),
                })
            })
            .collect();
        let n = rules.len();
        let file = scratch.0.join("dashboard-queries.yaml");
        let groups = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
        std::fs::write(&file, serde_norway::to_string(&groups).expect("yaml")).expect("write");
        let checked = promtool_ok(
            &promtool,
            &["check", "rules", file.to_str().expect("UTF-8")],
            &dir(),
        );
        assert!(
            checked.contains(&format!("SUCCESS: {n} rules found")),
            "{checked}"
        );
    }

    /// One series, `name{label="value",...}` (a sample line's start, or a promtool input):
    /// its name, its labels, and the rest of the text.
    fn parse_series(text: &str) -> Result<(String, BTreeMap<String, String>, &str), String> {
        let name_end = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(text.len());
        let name = text[..name_end].to_string();
        let mut labels = BTreeMap::new();
        let Some(mut rest) = text[name_end..].strip_prefix('{') else {
            return Ok((name, labels, &text[name_end..]));
        };
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if let Some(after) = rest.strip_prefix('}') {
                return Ok((name, labels, after));
            }
            let (label, after) = rest
                .split_once("=\"")
                .ok_or_else(|| format!("no label=\"value\" at {rest:?}"))?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err(format!("a dangling escape in {text:?}")),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("an unterminated value in {text:?}")),
                }
            };
            labels.insert(label.trim().to_string(), value);
            rest = &after[end + 1..];
        }
    }

    /// What a scrape exports: every family named by a `# HELP` line, with the label-name sets
    /// of its samples (empty when it has none), and the `# TYPE` of each.
    #[derive(Debug, Default)]
    struct Exported {
        families: BTreeMap<String, BTreeSet<BTreeSet<String>>>,
        types: BTreeMap<String, String>,
    }

    fn exported(scrape: &str) -> Exported {
        let mut out = Exported::default();
        for line in scrape.lines() {
            if let Some(help) = line.strip_prefix("# HELP ") {
                let name = help.split_whitespace().next().unwrap_or_default();
                out.families.entry(name.to_string()).or_default();
            } else if let Some(kind) = line.strip_prefix("# TYPE ") {
                let mut words = kind.split_whitespace();
                let (name, kind) = (words.next(), words.next());
                out.types.insert(
                    name.unwrap_or_default().into(),
                    kind.unwrap_or_default().into(),
                );
            } else if !line.is_empty() && !line.starts_with('#') {
                let (name, labels, _) =
                    parse_series(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                out.families
                    .get_mut(&name)
                    .unwrap_or_else(|| panic!("a sample before its # HELP: {line}"))
                    .insert(labels.into_keys().collect());
            }
        }
        out
    }

    /// The agent's `/metrics` after a real OOM kill in a container cgroup named as the
    /// kubelet's systemd driver names them, its names from a kubelet-style log tree, the
    /// container cgroup kept (limited, so its usage ratios are exported). None when the
    /// machine cannot run the agent.
    fn scrape() -> Option<&'static str> {
        static SCRAPE: OnceLock<Option<String>> = OnceLock::new();
        SCRAPE
            .get_or_init(|| {
                if let Some(why) = common::skip_reason() {
                    eprintln!("SKIPPED: {why}");
                    return None;
                }
                Some(scrape_after_a_kill())
            })
            .as_deref()
    }

    fn scrape_after_a_kill() -> String {
        const UID: &str = "6e2f4a1b-8c3d-4e5f-9a0b-1c2d3e4f5a6b";
        const ID: &str = "5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e";
        let wait = Duration::from_secs(30);
        let tree = common::KubeletTree::new("monitoring");
        tree.add("shop", "cart-7d9f8b6c5-x2x4z", UID, "app", ID);
        let out = tree.0.join("oomtrace.jsonl");
        let (tree_arg, out_arg) = (
            tree.0.to_str().expect("UTF-8"),
            out.to_str().expect("UTF-8"),
        );
        let mut agent = AgentProcess::start(
            &[
                "--no-pin",
                "--no-stdout",
                "--node-name",
                "node-a",
                "--host-log-dir",
                tree_arg,
                "--output-file",
                out_arg,
            ],
            Stdio::null(),
            None,
        );
        let h = MemoryHierarchy::detect().expect("hierarchy");
        let mut root = MemoryCgroup::create(
            &h,
            &format!("oomtrace-test-monitoring-{}", std::process::id()),
            None,
        )
        .expect("test root");
        let container = root
            .child(&h, "kubepods.slice", None)
            .and_then(|k| k.child(&h, "kubepods-burstable.slice", None))
            .and_then(|q| {
                q.child(
                    &h,
                    &format!("kubepods-burstable-pod{}.slice", systemd_pod(UID)),
                    None,
                )
            })
            .and_then(|pod| pod.child(&h, &format!("cri-containerd-{ID}.scope"), Some(32 << 20)))
            .expect("container cgroup");
        let mut hog = start_hog(
            container,
            &["--comm", "oomt-monitor"],
            &SpawnOptions::default(),
            false,
        );
        assert_eq!(killed_by(&mut hog, wait), Some(9), "the hog is OOM-killed");
        // The kill's series, and the container's ratios (the monitor walks the hierarchy
        // every 2 s and samples every second).
        let wanted = [
            "oomtrace_oom_kills_total{namespace=\"shop\"",
            "oomtrace_memory_working_set_ratio{namespace=\"shop\"",
            "oomtrace_memory_usage_ratio{namespace=\"shop\"",
            "oomtrace_records_dropped_total{",
        ];
        let deadline = Instant::now() + wait;
        let metrics = loop {
            let (status, metrics) = agent.get("/metrics");
            if status == 200 && wanted.iter().all(|w| metrics.contains(w)) {
                break metrics;
            }
            assert!(
                Instant::now() < deadline,
                "/metrics without all of {wanted:?} after {wait:?}:\n{metrics}\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(250));
        };
        assert_eq!(agent.terminate().code(), Some(0), "SIGTERM exits 0");
        metrics
    }

    #[test]
    fn rule_tests_feed_series_named_and_labelled_as_the_agent_exports_them() {
        let Some(scrape) = scrape() else { return };
        let exported = exported(scrape);
        // Each family's samples share one set of label names.
        for (name, sets) in &exported.families {
            assert!(sets.len() <= 1, "{name} has several label sets: {sets:?}");
        }
        let labels_of = |name: &str| -> Option<BTreeSet<String>> {
            let own = exported.families.get(name)?;
            if let Some(set) = own.iter().next() {
                return Some(set.clone());
            }
            // No sample in this scrape: the label names of the family it is rendered like.
            let (_, like) = LABELS_LIKE.iter().find(|(n, _)| *n == name)?;
            exported.families.get(*like)?.iter().next().cloned()
        };
        for (name, sets) in exported
            .families
            .iter()
            .filter(|(_, sets)| !sets.is_empty())
        {
            eprintln!("scraped: {name} {sets:?}");
        }
        let target: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
        let tests = yaml(RULE_TESTS);
        let mut checked = BTreeSet::new();
        for case in tests["tests"].as_sequence().expect("tests") {
            for input in case["input_series"].as_sequence().expect("input_series") {
                let series = input["series"].as_str().expect("series");
                let (name, labels, rest) =
                    parse_series(series).unwrap_or_else(|e| panic!("{e}: {series}"));
                assert!(rest.trim().is_empty(), "{series}");
                let names: BTreeSet<String> = labels.keys().cloned().collect();
                let expected = if name == "up" {
                    // Prometheus's own series of each target.
                    target.clone()
                } else {
                    let own = labels_of(&name).unwrap_or_else(|| {
                        panic!(
                            "{series}: the agent exports no {name} (nor a sample of it) in a \
                             scrape after a kill:\n{scrape}"
                        )
                    });
                    own.union(&target).cloned().collect()
                };
                assert_eq!(
                    names, expected,
                    "{series}: the label names of {name} as scraped, plus job and instance"
                );
                checked.insert(name);
            }
        }
        // Every metric the alerts read is fed to them.
        for name in metric_names(&rule_exprs()) {
            assert!(checked.contains(&name), "the promtool tests feed no {name}");
        }
    }

    /// The `oomtrace_*` metric names in `exprs`.
    fn metric_names(exprs: &[String]) -> BTreeSet<String> {
        let re = regex::Regex::new(r"\boomtrace_[a-z0-9_]+").expect("regex");
        exprs
            .iter()
            .flat_map(|e| re.find_iter(e).map(|m| m.as_str().to_string()))
            .collect()
    }

    #[test]
    fn rules_and_dashboard_query_only_metrics_the_agent_exports() {
        let Some(scrape) = scrape() else { return };
        let exported = exported(scrape);
        // No histograms or summaries: a name in a query is a family name as it is, with no
        // _bucket, _sum or _count to strip.
        for (name, kind) in &exported.types {
            assert!(
                kind == "counter" || kind == "gauge",
                "{name} is a {kind}: strip its suffixes before comparing names"
            );
        }
        let rules = metric_names(&rule_exprs());
        let dashboard = metric_names(&dashboard_exprs());
        for must in [
            "oomtrace_oom_kills_total",
            "oomtrace_memory_working_set_ratio",
            "oomtrace_memory_thrashing_seconds_total",
            "oomtrace_oom_kills_unrecorded_total",
        ] {
            assert!(rules.contains(must), "the rules read {must}");
        }
        assert!(
            dashboard.len() >= 10,
            "the dashboard reads {} metrics: {dashboard:?}",
            dashboard.len()
        );
        for (what, names) in [("the rules", &rules), ("the dashboard", &dashboard)] {
            let unknown: Vec<&String> = names
                .iter()
                .filter(|n| !exported.families.contains_key(*n))
                .collect();
            assert!(
                unknown.is_empty(),
                "{what} query metrics the agent does not export: {unknown:?}\nexported: {:?}",
                exported.families.keys().collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn series_parser_reads_escapes_and_bare_names() {
        let (name, labels, rest) = parse_series(r#"m{a="x\"y",b="c\\d"} 1"#).expect("parses");
        assert_eq!(name, "m");
        assert_eq!(labels["a"], "x\"y");
        assert_eq!(labels["b"], "c\\d");
        assert_eq!(rest, " 1");
        let (name, labels, rest) = parse_series("oomtrace_events_lost_total 0").expect("parses");
        assert_eq!(
            (name.as_str(), labels.len(), rest),
            ("oomtrace_events_lost_total", 0, " 0")
        );
        assert!(parse_series(r#"m{a="x} 1"#).is_err());
    }
}
