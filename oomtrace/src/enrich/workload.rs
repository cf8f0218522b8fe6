//! Cgroup path → workload: which container, pod, systemd unit or node budget a cgroup is.
//!
//! Paths are relative to the memory hierarchy's root, as oomtrace and the kernel's OOM report
//! print them (`/`, `/system.slice/x.service`); cgroup v1 (`/sys/fs/cgroup/memory`) and v2 use
//! the same shapes. One example per runtime and driver (`<id>` is a 64 lowercase hex container
//! id, `<uid>` a pod UID such as `0b3a3f2e-1c2d-4e5f-8a9b-0c1d2e3f4a5b`, written with `_` for
//! `-` in systemd names):
//!
//! | runtime / driver | example path |
//! |---|---|
//! | kubelet systemd driver, containerd | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope` |
//! | kubelet systemd driver, CRI-O | `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/crio-<id>.scope` (sometimes with a `/container` child; `crio-conmon-<id>.scope` is CRI-O's monitor, not a container) |
//! | kubelet systemd driver, cri-dockerd | `/kubepods.slice/kubepods-pod<uid>.slice/docker-<id>.scope` (a Guaranteed pod: no QoS slice) |
//! | kubelet cgroupfs driver, any runtime | `/kubepods/burstable/pod<uid>/<id>` (the runtime is not in the path) |
//! | kubelet under a prefix (kind, k3s) | `/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope` |
//! | older containerd quirk | `/kubepods-burstable-pod<uid>.slice:cri-containerd:<id>` |
//! | Docker, systemd driver | `/system.slice/docker-<id>.scope` |
//! | Docker, cgroupfs driver | `/docker/<id>` |
//! | containerd alone (ctr), cgroupfs | `/default/<id>` |
//! | containerd alone (nerdctl), systemd | `/system.slice/nerdctl-<id>.scope` |
//! | Podman, systemd | `/machine.slice/libpod-<id>.scope` (may have a `container` child) |
//! | Podman, cgroupfs | `/libpod_parent/libpod-<id>` (in a pod: `/libpod_parent/<pod id>/libpod-<id>`; `conmon` beside them is not a container) |
//! | systemd unit | `/system.slice/nginx.service` |
//!
//! Rules:
//! - The `kubepods` component is found anywhere in the path (nested nodes, custom cgroup roots);
//!   each one starts a new Kubernetes node, so container and pod facts read above it are dropped.
//! - Every field holds the innermost thing of its kind; [`Level`] says what the last component
//!   is. A path that continues below a container (`/docker/<id>/sub`) is [`Level::Other`] but
//!   keeps the container it is in.
//! - `/<namespace>/<name>` is a containerd (`ctr run`) container only when nothing else was read
//!   from the path, the path has exactly these two components, the namespace is one of
//!   [`CONTAINERD_NAMESPACES`], and the name is a valid containerd identifier that is not a
//!   systemd slice. Such names need not be hex ids: the container id is then unknown.
//! - Container ids are exactly 64 lowercase hex characters and pod UIDs lowercase 8-4-4-4-12 hex;
//!   a name whose id fails this is not recognised at all.
//! - Only the exact path `/` is the root. A path that is not absolute or has empty components
//!   (`""`, `//`, a trailing `/`) is not a kernel path: [`Level::Other`] with nothing read.

use std::fmt;

/// Container runtimes recognisable from a cgroup path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
}

impl Runtime {
    /// The runtime's name as OpenTelemetry's `container.runtime` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Kubernetes pod's QoS class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// The class as the kubelet names its cgroups (lower case).
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "guaranteed",
            QosClass::Burstable => "burstable",
            QosClass::BestEffort => "besteffort",
        }
    }

    /// The class a kubelet QoS cgroup name stands for (`burstable`, `besteffort`); Guaranteed
    /// pods have no QoS cgroup.
    fn from_cgroup_name(name: &str) -> Option<Self> {
        match name {
            "burstable" => Some(QosClass::Burstable),
            "besteffort" => Some(QosClass::BestEffort),
            _ => None,
        }
    }
}

impl fmt::Display for QosClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the path's LAST component is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// A container's own cgroup (runtime scope or cgroupfs container id dir).
    Container,
    /// A Kubernetes pod's cgroup (kubepods-…-pod<uid>.slice or pod<uid>).
    Pod,
    /// kubepods itself or a QoS-class cgroup under it (node allocatable): the node's budget.
    Kubepods,
    /// The root cgroup "/".
    Root,
    /// Anything else (a systemd service/slice/scope, a user session, conmon, …).
    Other,
}

/// What a cgroup path says about the workload in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// What the path's last component is.
    pub level: Level,
    /// Innermost systemd unit in the path whose name ends in .service or .scope (e.g. "nginx.service", "docker-<id>.scope", "session-3.scope"); slices are not units for this purpose.
    pub systemd_unit: Option<String>,
    /// Runtime of the innermost container (or container monitor) in the path.
    pub runtime: Option<Runtime>,
    /// Full container id (64 lowercase hex) when the path names a container.
    pub container_id: Option<String>,
    /// Pod UID in its canonical dashed form (systemd paths use underscores: convert).
    pub pod_uid: Option<String>,
    /// QoS class of the pod, or of the kubepods QoS cgroup, the path is in.
    pub qos_class: Option<QosClass>,
}

impl Workload {
    /// A workload of `level` about which nothing else is known.
    fn bare(level: Level) -> Self {
        Workload {
            level,
            systemd_unit: None,
            runtime: None,
            container_id: None,
            pod_uid: None,
            qos_class: None,
        }
    }

    /// Records what one path component says, on top of what its ancestors said.
    fn apply(&mut self, part: &Part) {
        match part {
            Part::Kubepods { qos, .. } => {
                self.runtime = None;
                self.container_id = None;
                self.pod_uid = None;
                self.qos_class = *qos;
            }
            Part::Pod { pod, .. } => self.enter_pod(pod),
            Part::Container(c) => {
                if let Some(pod) = &c.pod {
                    self.enter_pod(pod);
                }
                self.runtime = c.runtime;
                self.container_id = c.id.clone();
            }
            Part::Monitor(runtime) => {
                self.runtime = Some(*runtime);
                self.container_id = None;
            }
            Part::DockerParent | Part::Other => {}
        }
    }

    /// Records that the path is inside `pod`.
    fn enter_pod(&mut self, pod: &PodRef) {
        self.runtime = None;
        self.container_id = None;
        self.pod_uid = Some(pod.uid.clone());
        self.qos_class = Some(pod.qos);
    }

    /// Whether nothing at all was read from the path.
    fn is_blank(&self) -> bool {
        *self == Workload::bare(Level::Other)
    }
}

/// Whose limit an OOM hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A container's own memory limit.
    Container,
    /// A Kubernetes pod's limit (the sum of its containers').
    Pod,
    /// The node's memory: a global OOM, or kubepods / the root cgroup at its limit.
    Node,
    /// Some other cgroup's limit (a systemd unit, a user slice), or unknown.
    Other,
}

impl Scope {
    /// The scope's name in events and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Container => "container",
            Scope::Pod => "pod",
            Scope::Node => "node",
            Scope::Other => "other",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whose limit an OOM hit, from the OOM's constraint and the OOM cgroup's workload.
///
/// `global` = the kernel's constraint was "none" (a global OOM); `oom_memcg` = the workload
/// parsed from the OOM memcg's path when the limit of a memcg was hit (None when unknown).
/// A global OOM is the node's; otherwise the OOM memcg's level decides: Container → Container,
/// Pod → Pod, Kubepods or Root → Node, Other or unknown → Other.
pub fn scope(global: bool, oom_memcg: Option<&Workload>) -> Scope {
    if global {
        return Scope::Node;
    }
    match oom_memcg.map(|w| w.level) {
        Some(Level::Container) => Scope::Container,
        Some(Level::Pod) => Scope::Pod,
        Some(Level::Kubepods | Level::Root) => Scope::Node,
        Some(Level::Other) | None => Scope::Other,
    }
}

/// containerd namespaces whose `/<namespace>/<name>` cgroups are read as `ctr run` containers:
/// `default` (ctr's and nerdctl's default), `k8s.io` (the CRI plugin's), `moby` (Docker's).
pub const CONTAINERD_NAMESPACES: [&str; 3] = ["default", "k8s.io", "moby"];

/// Name prefixes of container cgroups (`<prefix><id>.scope` with systemd, `<prefix><id>` with
/// cgroupfs managers) and the runtime each belongs to.
const CONTAINER_PREFIXES: [(&str, Runtime); 5] = [
    ("cri-containerd-", Runtime::Containerd),
    ("crio-", Runtime::CriO),
    ("docker-", Runtime::Docker),
    ("nerdctl-", Runtime::Containerd),
    ("libpod-", Runtime::Podman),
];

/// Name prefixes of container monitor (conmon) cgroups: the runtime's, but not a container.
const MONITOR_PREFIXES: [(&str, Runtime); 2] = [
    ("crio-conmon-", Runtime::CriO),
    ("libpod-conmon-", Runtime::Podman),
];

/// Runtime names in the older containerd `<slice>:<prefix>:<id>` cgroup name.
const QUIRK_PREFIXES: [(&str, Runtime); 4] = [
    ("cri-containerd", Runtime::Containerd),
    ("crio", Runtime::CriO),
    ("docker", Runtime::Docker),
    ("libpod", Runtime::Podman),
];

/// A Kubernetes pod named by a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodRef {
    /// Canonical dashed UID.
    uid: String,
    /// QoS class (Guaranteed when the pod sits directly under kubepods).
    qos: QosClass,
}

/// A container named by a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ContainerRef {
    /// The runtime, when the name says it.
    runtime: Option<Runtime>,
    /// The 64-hex id, when the name holds one.
    id: Option<String>,
    /// The pod, when the same name also says it (the older containerd quirk).
    pod: Option<PodRef>,
}

/// What one path component is, in the context of the component above it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// `kubepods` or one of its QoS cgroups (`qos` set); `cgroupfs` when named by the kubelet's
    /// cgroupfs driver (plain names), whose children are then read as cgroupfs names too.
    Kubepods {
        qos: Option<QosClass>,
        cgroupfs: bool,
    },
    /// A pod's cgroup; `cgroupfs` as for `Kubepods`.
    Pod { pod: PodRef, cgroupfs: bool },
    /// A container's own cgroup.
    Container(ContainerRef),
    /// A container monitor (conmon) of this runtime.
    Monitor(Runtime),
    /// `docker`: Docker's cgroupfs parent, whose children are container ids.
    DockerParent,
    /// Anything else.
    Other,
}

impl Part {
    /// The level a path ending in this component has.
    fn level(&self) -> Level {
        match self {
            Part::Kubepods { .. } => Level::Kubepods,
            Part::Pod { .. } => Level::Pod,
            Part::Container(_) => Level::Container,
            Part::Monitor(_) | Part::DockerParent | Part::Other => Level::Other,
        }
    }
}

/// Parses a cgroup path. Never fails: unknown shapes give Level::Other with what could be read.
pub fn parse(path: &str) -> Workload {
    if path == "/" {
        return Workload::bare(Level::Root);
    }
    let Some(components) = components(path) else {
        return Workload::bare(Level::Other);
    };
    let mut workload = Workload::bare(Level::Other);
    let mut parent = Part::Other;
    for name in &components {
        let part = classify(name, &parent);
        if is_unit(name) {
            workload.systemd_unit = Some((*name).to_string());
        }
        workload.apply(&part);
        parent = part;
    }
    workload.level = parent.level();
    if workload.is_blank() {
        if let Some(container) = containerd_namespace_container(&components) {
            workload.apply(&container);
            workload.level = container.level();
        }
    }
    workload
}

/// The components of an absolute cgroup path, or None when it is not one (not starting with
/// `/`, or with an empty component).
fn components(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(parts)
}

/// What the component `name` is, given what its parent component was.
fn classify(name: &str, parent: &Part) -> Part {
    if let Some(part) = kubepods_slice(name) {
        return part;
    }
    if let Some(part) = containerd_quirk(name) {
        return part;
    }
    if let Some(part) = runtime_prefixed(name) {
        return part;
    }
    match parent {
        Part::Kubepods {
            cgroupfs: true,
            qos,
        } => cgroupfs_under_kubepods(name, *qos),
        Part::Pod { .. } | Part::DockerParent => match container_id(name) {
            Some(id) => Part::Container(ContainerRef {
                runtime: matches!(parent, Part::DockerParent).then_some(Runtime::Docker),
                id: Some(id),
                pod: None,
            }),
            None => Part::Other,
        },
        // Some runtimes (crun, for CRI-O and Podman) put the container's processes in a
        // `container` child of its scope: that child is the container too.
        Part::Container(c) if name == "container" => Part::Container(c.clone()),
        _ => match name {
            "kubepods" => Part::Kubepods {
                qos: None,
                cgroupfs: true,
            },
            "docker" => Part::DockerParent,
            _ => Part::Other,
        },
    }
}

/// A child of the cgroupfs driver's `kubepods` (`qos` None) or of one of its QoS cgroups: a QoS
/// cgroup (`burstable`, `besteffort`, only directly under `kubepods`) or a pod (`pod<uid>`).
fn cgroupfs_under_kubepods(name: &str, qos: Option<QosClass>) -> Part {
    if qos.is_none() {
        if let Some(q) = QosClass::from_cgroup_name(name) {
            return Part::Kubepods {
                qos: Some(q),
                cgroupfs: true,
            };
        }
    }
    match name.strip_prefix("pod").and_then(|uid| pod_uid(uid, '-')) {
        Some(uid) => Part::Pod {
            pod: PodRef {
                uid,
                qos: qos.unwrap_or(QosClass::Guaranteed),
            },
            cgroupfs: true,
        },
        None => Part::Other,
    }
}

/// A systemd-driver kubelet slice: `[<prefix>-]kubepods[-<qos>][-pod<uid_with_underscores>].slice`
/// (the prefix being e.g. `kubelet` on kind and k3s). None for any other name.
fn kubepods_slice(name: &str) -> Option<Part> {
    let stem = name.strip_suffix(".slice")?;
    let words: Vec<&str> = stem.split('-').collect();
    let at = words.iter().rposition(|w| *w == "kubepods")?;
    let rest = words.get(at + 1..).unwrap_or(&[]);
    let pod = |qos: QosClass, word: &str| {
        let uid = pod_uid(word.strip_prefix("pod")?, '_')?;
        Some(Part::Pod {
            pod: PodRef { uid, qos },
            cgroupfs: false,
        })
    };
    match rest {
        [] => Some(Part::Kubepods {
            qos: None,
            cgroupfs: false,
        }),
        [word] => match QosClass::from_cgroup_name(word) {
            Some(qos) => Some(Part::Kubepods {
                qos: Some(qos),
                cgroupfs: false,
            }),
            None => pod(QosClass::Guaranteed, word),
        },
        [qos, word] => pod(QosClass::from_cgroup_name(qos)?, word),
        _ => None,
    }
}

/// The older containerd quirk, where a systemd-style cgroups path was used as a directory name:
/// `<slice>:<runtime prefix>:<id>` (the slice may name the pod). None for any other name.
fn containerd_quirk(name: &str) -> Option<Part> {
    let mut fields = name.split(':');
    let (slice, prefix, id) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() || !slice.ends_with(".slice") {
        return None;
    }
    let runtime = QUIRK_PREFIXES
        .iter()
        .find(|(p, _)| *p == prefix)
        .map(|(_, r)| *r)?;
    let id = container_id(id)?;
    let pod = match kubepods_slice(slice) {
        Some(Part::Pod { pod, .. }) => Some(pod),
        _ => None,
    };
    Some(Part::Container(ContainerRef {
        runtime: Some(runtime),
        id: Some(id),
        pod,
    }))
}

/// A runtime-named cgroup: a container (`cri-containerd-<id>.scope`, `crio-<id>`, …) or a
/// container monitor (`crio-conmon-<id>.scope`, …). None when the name has no runtime prefix or
/// its id is not a full container id.
fn runtime_prefixed(name: &str) -> Option<Part> {
    let id_after = |prefix: &str| {
        let rest = name.strip_prefix(prefix)?;
        container_id(rest.strip_suffix(".scope").unwrap_or(rest))
    };
    if let Some((_, runtime)) = MONITOR_PREFIXES.iter().find(|(p, _)| id_after(p).is_some()) {
        return Some(Part::Monitor(*runtime));
    }
    CONTAINER_PREFIXES.iter().find_map(|(prefix, runtime)| {
        let id = id_after(prefix)?;
        Some(Part::Container(ContainerRef {
            runtime: Some(*runtime),
            id: Some(id),
            pod: None,
        }))
    })
}

/// The `ctr run` reading of a path of exactly `/<namespace>/<name>`: a containerd container
/// when the namespace is one of [`CONTAINERD_NAMESPACES`] and the name a valid containerd
/// identifier that is not a systemd slice. The id is known only when the name is 64 hex.
fn containerd_namespace_container(components: &[&str]) -> Option<Part> {
    let [namespace, name] = components else {
        return None;
    };
    if !CONTAINERD_NAMESPACES.contains(namespace)
        || !is_containerd_identifier(name)
        || name.ends_with(".slice")
    {
        return None;
    }
    Some(Part::Container(ContainerRef {
        runtime: Some(Runtime::Containerd),
        id: container_id(name),
        pod: None,
    }))
}

/// Whether `name` is a valid containerd identifier: at most 76 characters, ASCII alphanumeric
/// runs separated by single `.`, `_` or `-`.
fn is_containerd_identifier(name: &str) -> bool {
    name.len() <= 76
        && name
            .split(['.', '_', '-'])
            .all(|run| !run.is_empty() && run.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Whether `name` is a systemd unit that counts for [`Workload::systemd_unit`]: a service or a
/// scope with a non-empty name.
fn is_unit(name: &str) -> bool {
    [".service", ".scope"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|stem| !stem.is_empty())
    })
}

/// `s` as a container id: exactly 64 lowercase hex characters.
fn container_id(s: &str) -> Option<String> {
    let valid = s.len() == 64 && s.bytes().all(is_lower_hex);
    valid.then(|| s.to_string())
}

/// `s` as a pod UID written with `sep` between its groups (`-` in cgroupfs names, `_` in
/// systemd names): lowercase hex in groups of 8-4-4-4-12. Returns the canonical dashed form.
fn pod_uid(s: &str, sep: char) -> Option<String> {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let groups: Vec<&str> = s.split(sep).collect();
    let valid = groups.len() == GROUPS.len()
        && groups
            .iter()
            .zip(GROUPS)
            .all(|(g, len)| g.len() == len && g.bytes().all(is_lower_hex));
    valid.then(|| groups.join("-"))
}

/// Whether `b` is a lowercase hex digit.
fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID1: &str = "cc658ef2de3bbdedae29b41b74aec9a10bdfe6ea7c0c13cbba6689a054c3253c";
    const ID2: &str = "1879c51fdd5c15e7a54c22cb602f156307096c100aaf7fb5f55e99da9bb408ad";
    const ID3: &str = "0dd0730b3e79f4ad6153fe331f49ca600e99456fba4cba7c38486d3cb927a2a2";
    const ID4: &str = "f3fe229790000477a8ecaadfd4a37ac3e876df9ee36f08dea91a5daf556f29f8";
    const UID1: &str = "0b3a3f2e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
    const UID2: &str = "60bac51b-cbf4-4526-b2c3-f54a08f32a1b";
    const UID3: &str = "eee203b8-a1f2-4a12-b205-e043b20a99c2";

    /// `uid` as systemd names write it.
    fn us(uid: &str) -> String {
        uid.replace('-', "_")
    }

    /// An expected workload, every field spelled out.
    fn w(
        level: Level,
        unit: Option<&str>,
        runtime: Option<Runtime>,
        id: Option<&str>,
        uid: Option<&str>,
        qos: Option<QosClass>,
    ) -> Workload {
        Workload {
            level,
            systemd_unit: unit.map(str::to_string),
            runtime,
            container_id: id.map(str::to_string),
            pod_uid: uid.map(str::to_string),
            qos_class: qos,
        }
    }

    /// Every shape, with the full workload it must give.
    fn table() -> Vec<(String, Workload)> {
        use Level::*;
        use QosClass::*;
        use Runtime::*;
        let (u1, u2, u3) = (us(UID1), us(UID2), us(UID3));
        let crio_scope = format!("crio-{ID2}.scope");
        let docker_scope = format!("docker-{ID1}.scope");
        let cri_scope = format!("cri-containerd-{ID1}.scope");
        let libpod_scope = format!("libpod-{ID3}.scope");
        vec![
            // The root.
            ("/".into(), w(Root, None, None, None, None, None)),
            // kubelet, systemd driver.
            (
                "/kubepods.slice".into(),
                w(Kubepods, None, None, None, None, None),
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice".into(),
                w(Kubepods, None, None, None, None, Some(Burstable)),
            ),
            (
                "/kubepods.slice/kubepods-besteffort.slice".into(),
                w(Kubepods, None, None, None, None, Some(BestEffort)),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{u1}.slice"),
                w(Pod, None, None, None, Some(UID1), Some(Guaranteed)),
            ),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u1}.slice"),
                w(Pod, None, None, None, Some(UID1), Some(Burstable)),
            ),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u2}.slice"),
                w(Pod, None, None, None, Some(UID2), Some(BestEffort)),
            ),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u1}.slice/{cri_scope}"),
                w(Container, Some(&cri_scope), Some(Containerd), Some(ID1), Some(UID1), Some(Burstable)),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{u3}.slice/{cri_scope}"),
                w(Container, Some(&cri_scope), Some(Containerd), Some(ID1), Some(UID3), Some(Guaranteed)),
            ),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u2}.slice/{crio_scope}"),
                w(Container, Some(&crio_scope), Some(CriO), Some(ID2), Some(UID2), Some(BestEffort)),
            ),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u2}.slice/{crio_scope}/container"),
                w(Container, Some(&crio_scope), Some(CriO), Some(ID2), Some(UID2), Some(BestEffort)),
            ),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u2}.slice/crio-conmon-{ID2}.scope"),
                w(Other, Some(&format!("crio-conmon-{ID2}.scope")), Some(CriO), None, Some(UID2), Some(BestEffort)),
            ),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u3}.slice/{docker_scope}"),
                w(Container, Some(&docker_scope), Some(Docker), Some(ID1), Some(UID3), Some(Burstable)),
            ),
            // kubelet, cgroupfs driver.
            ("/kubepods".into(), w(Kubepods, None, None, None, None, None)),
            (
                "/kubepods/burstable".into(),
                w(Kubepods, None, None, None, None, Some(Burstable)),
            ),
            (
                "/kubepods/besteffort".into(),
                w(Kubepods, None, None, None, None, Some(BestEffort)),
            ),
            (
                format!("/kubepods/pod{UID1}"),
                w(Pod, None, None, None, Some(UID1), Some(Guaranteed)),
            ),
            (
                format!("/kubepods/burstable/pod{UID2}"),
                w(Pod, None, None, None, Some(UID2), Some(Burstable)),
            ),
            (
                format!("/kubepods/besteffort/pod{UID3}"),
                w(Pod, None, None, None, Some(UID3), Some(BestEffort)),
            ),
            (
                format!("/kubepods/burstable/pod{UID2}/{ID3}"),
                w(Container, None, None, Some(ID3), Some(UID2), Some(Burstable)),
            ),
            // The pause (sandbox) container has the same shape.
            (
                format!("/kubepods/pod{UID1}/{ID4}"),
                w(Container, None, None, Some(ID4), Some(UID1), Some(Guaranteed)),
            ),
            // CRI-O's cgroupfs manager names containers and conmon without `.scope`.
            (
                format!("/kubepods/besteffort/pod{UID3}/crio-{ID2}"),
                w(Container, None, Some(CriO), Some(ID2), Some(UID3), Some(BestEffort)),
            ),
            (
                format!("/kubepods/besteffort/pod{UID3}/crio-conmon-{ID2}"),
                w(Other, None, Some(CriO), None, Some(UID3), Some(BestEffort)),
            ),
            // kubelet under a prefix slice (kind, k3s) and nested nodes.
            (
                "/kubelet.slice/kubelet-kubepods.slice".into(),
                w(Kubepods, None, None, None, None, None),
            ),
            (
                format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{u1}.slice/{cri_scope}"),
                w(Container, Some(&cri_scope), Some(Containerd), Some(ID1), Some(UID1), Some(Burstable)),
            ),
            (
                format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{u2}.slice"),
                w(Pod, None, None, None, Some(UID2), Some(Guaranteed)),
            ),
            (
                format!("/system.slice/docker-{ID4}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{u3}.slice/cri-containerd-{ID2}.scope"),
                w(Container, Some(&format!("cri-containerd-{ID2}.scope")), Some(Containerd), Some(ID2), Some(UID3), Some(BestEffort)),
            ),
            (
                format!("/system.slice/docker-{ID4}.scope/kubelet.slice/kubelet-kubepods.slice"),
                w(Kubepods, Some(&format!("docker-{ID4}.scope")), None, None, None, None),
            ),
            (
                format!("/system.slice/docker-{ID4}.scope/kubelet.slice"),
                w(Other, Some(&format!("docker-{ID4}.scope")), Some(Docker), Some(ID4), None, None),
            ),
            (
                format!("/docker/{ID4}/kubepods/burstable/pod{UID1}/{ID3}"),
                w(Container, None, None, Some(ID3), Some(UID1), Some(Burstable)),
            ),
            // Older containerd quirk: a systemd cgroups path used as a directory name.
            (
                format!("/kubepods-burstable-pod{u1}.slice:cri-containerd:{ID1}"),
                w(Container, None, Some(Containerd), Some(ID1), Some(UID1), Some(Burstable)),
            ),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u2}.slice:cri-containerd:{ID3}"),
                w(Container, None, Some(Containerd), Some(ID3), Some(UID2), Some(BestEffort)),
            ),
            // Docker without Kubernetes.
            (
                format!("/system.slice/{docker_scope}"),
                w(Container, Some(&docker_scope), Some(Docker), Some(ID1), None, None),
            ),
            (
                format!("/docker/{ID1}"),
                w(Container, None, Some(Docker), Some(ID1), None, None),
            ),
            (
                format!("/docker/{ID1}/docker/{ID2}"),
                w(Container, None, Some(Docker), Some(ID2), None, None),
            ),
            ("/docker".into(), w(Other, None, None, None, None, None)),
            (
                "/system.slice/docker.service".into(),
                w(Other, Some("docker.service"), None, None, None, None),
            ),
            // containerd without Kubernetes.
            (
                format!("/default/{ID3}"),
                w(Container, None, Some(Containerd), Some(ID3), None, None),
            ),
            (
                format!("/k8s.io/{ID4}"),
                w(Container, None, Some(Containerd), Some(ID4), None, None),
            ),
            (
                "/default/redis-1".into(),
                w(Container, None, Some(Containerd), None, None, None),
            ),
            (
                format!("/system.slice/nerdctl-{ID3}.scope"),
                w(Container, Some(&format!("nerdctl-{ID3}.scope")), Some(Containerd), Some(ID3), None, None),
            ),
            (
                "/system.slice/containerd.service".into(),
                w(Other, Some("containerd.service"), None, None, None, None),
            ),
            // CRI-O without Kubernetes.
            (
                format!("/machine.slice/{crio_scope}"),
                w(Container, Some(&crio_scope), Some(CriO), Some(ID2), None, None),
            ),
            // Podman.
            (
                format!("/machine.slice/{libpod_scope}"),
                w(Container, Some(&libpod_scope), Some(Podman), Some(ID3), None, None),
            ),
            (
                format!("/machine.slice/{libpod_scope}/container"),
                w(Container, Some(&libpod_scope), Some(Podman), Some(ID3), None, None),
            ),
            (
                format!("/machine.slice/libpod-conmon-{ID3}.scope"),
                w(Other, Some(&format!("libpod-conmon-{ID3}.scope")), Some(Podman), None, None, None),
            ),
            (
                format!("/user.slice/user-1000.slice/user@1000.service/user.slice/{libpod_scope}"),
                w(Container, Some(&libpod_scope), Some(Podman), Some(ID3), None, None),
            ),
            (
                format!("/libpod_parent/libpod-{ID3}"),
                w(Container, None, Some(Podman), Some(ID3), None, None),
            ),
            // A podman pod (`podman pod create`, `podman kube play`) under the cgroupfs
            // manager: the pod's cgroup is its bare 64-hex id, its conmon beside the containers.
            (
                format!("/libpod_parent/{ID1}/libpod-{ID3}"),
                w(Container, None, Some(Podman), Some(ID3), None, None),
            ),
            (format!("/libpod_parent/{ID1}/conmon"), w(Other, None, None, None, None, None)),
            ("/libpod_parent/conmon".into(), w(Other, None, None, None, None, None)),
            (format!("/libpod_parent/{ID1}"), w(Other, None, None, None, None, None)),
            // systemd.
            (
                "/system.slice/nginx.service".into(),
                w(Other, Some("nginx.service"), None, None, None, None),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo-123.scope".into(),
                w(Other, Some("app-foo-123.scope"), None, None, None, None),
            ),
            (
                "/user.slice/user-1000.slice/session-3.scope".into(),
                w(Other, Some("session-3.scope"), None, None, None, None),
            ),
            (
                "/init.scope".into(),
                w(Other, Some("init.scope"), None, None, None, None),
            ),
            (
                "/system.slice".into(),
                w(Other, None, None, None, None, None),
            ),
            // Below a container: still in it, but not its own cgroup.
            (
                format!("/system.slice/{docker_scope}/init.scope"),
                w(Other, Some("init.scope"), Some(Docker), Some(ID1), None, None),
            ),
        ]
    }

    #[test]
    fn parses_every_shape() {
        for (path, expected) in table() {
            assert_eq!(parse(&path), expected, "path {path}");
        }
    }

    #[test]
    fn odd_inputs_read_nothing() {
        let nothing = Workload::bare(Level::Other);
        let cases = [
            String::new(),
            "//".into(),
            "///".into(),
            "kubepods.slice".into(),
            "/kubepods.slice/".into(),
            format!("docker/{ID1}"),
            "/kubepods.slice/kubepods-podXYZ.slice".into(),
            "/kubepods.slice/kubepods-pod.slice".into(),
            "/kubepods/podnot-a-uid".into(),
            // A dashed uid in a systemd name, an underscored one in a cgroupfs name.
            format!("/kubepods.slice/kubepods-pod{UID1}.slice"),
            format!("/kubepods/pod{}", us(UID1)),
            format!("/kubepods/pod{}", UID1.to_uppercase()),
            // Ids too short, too long, upper case, not hex.
            format!("/docker/{}", &ID1[1..]),
            format!("/docker/{ID1}0"),
            format!("/docker/{}", ID1.to_uppercase()),
            format!("/docker/{}g", &ID1[1..]),
            "/garbage/\u{0}\u{7f}/🦀".into(),
            ":::".into(),
            "/:::".into(),
            format!("/{ID1}"),
            "/default".into(),
            "/default/a/b".into(),
            "/default/not..valid".into(),
            "/default/machine.slice".into(),
            "/k8s.io/-leading-dash".into(),
            format!("/moby/{}", "x".repeat(77)),
        ];
        for path in cases {
            assert_eq!(parse(&path), nothing, "path {path:?}");
        }
    }

    #[test]
    fn odd_inputs_keep_what_could_be_read() {
        // A malformed pod under a QoS slice keeps the QoS class; an invalid id in a unit name
        // leaves just the unit.
        assert_eq!(
            parse("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podXYZ.slice"),
            w(
                Level::Other,
                None,
                None,
                None,
                None,
                Some(QosClass::Burstable)
            )
        );
        assert_eq!(
            parse("/system.slice/docker-abc.scope"),
            w(
                Level::Other,
                Some("docker-abc.scope"),
                None,
                None,
                None,
                None
            )
        );
        assert_eq!(
            parse(&format!("/kubepods/burstable/pod{UID1}/not-an-id")),
            w(
                Level::Other,
                None,
                None,
                None,
                Some(UID1),
                Some(QosClass::Burstable)
            )
        );
        // `.scope` alone is not a unit name.
        assert_eq!(parse("/.scope"), Workload::bare(Level::Other));
    }

    #[test]
    fn parse_never_panics_on_prefixes_of_sample_paths() {
        for (path, _) in table() {
            for end in (0..=path.len()).filter(|&i| path.is_char_boundary(i)) {
                let _ = parse(&path[..end]);
                let _ = parse(&path[end..]);
            }
        }
    }

    #[test]
    fn scope_follows_the_rules() {
        let at = |path: &str| parse(path);
        let container = at(&format!("/system.slice/docker-{ID1}.scope"));
        let pod = at(&format!("/kubepods/burstable/pod{UID1}"));
        let kubepods = at("/kubepods.slice/kubepods-besteffort.slice");
        let root = at("/");
        let service = at("/system.slice/nginx.service");
        // A global OOM is the node's whatever the memcg.
        for w in [&container, &pod, &kubepods, &root, &service] {
            assert_eq!(scope(true, Some(w)), Scope::Node);
        }
        assert_eq!(scope(true, None), Scope::Node);
        assert_eq!(scope(false, Some(&container)), Scope::Container);
        assert_eq!(scope(false, Some(&pod)), Scope::Pod);
        assert_eq!(scope(false, Some(&kubepods)), Scope::Node);
        assert_eq!(scope(false, Some(&root)), Scope::Node);
        assert_eq!(scope(false, Some(&service)), Scope::Other);
        assert_eq!(scope(false, None), Scope::Other);
    }

    #[test]
    fn names_are_stable() {
        assert_eq!(Runtime::Docker.as_str(), "docker");
        assert_eq!(Runtime::Containerd.as_str(), "containerd");
        assert_eq!(Runtime::CriO.as_str(), "cri-o");
        assert_eq!(Runtime::Podman.as_str(), "podman");
        assert_eq!(QosClass::Guaranteed.as_str(), "guaranteed");
        assert_eq!(QosClass::Burstable.as_str(), "burstable");
        assert_eq!(QosClass::BestEffort.as_str(), "besteffort");
        assert_eq!(Scope::Container.as_str(), "container");
        assert_eq!(Scope::Pod.as_str(), "pod");
        assert_eq!(Scope::Node.as_str(), "node");
        assert_eq!(Scope::Other.as_str(), "other");
        assert_eq!(Scope::Pod.to_string(), "pod");
    }
}
