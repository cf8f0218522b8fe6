//! The container image (`cargo xtask image`) under a real runtime: Debian's podman with runc.
//!
//! - The agent runs with the DaemonSet's security context, read from the rendered manifest
//!   (`kubectl kustomize deploy/base`): its capabilities, read-only root, no privilege
//!   escalation, uid 0, env and host mounts. Only the seccomp profile differs: podman's default
//!   allows bpf() only with CAP_SYS_ADMIN, so the agent runs under deploy/seccomp/oomtrace.json.
//!   It must record the OOM kill of another, memory-limited podman container, named by that
//!   container's id and runtime, and agree with the kernel's own report.
//! - `podman kube play` runs the DaemonSet's pod template itself, with a variant of the
//!   profile that logs (instead of refusing) every call outside its list: the agent's probes
//!   answer on the published port, it records a kill, and the kernel logged exactly the one call
//!   the variant leaves out on purpose (proving the log is read), nothing else.
//!
//! `cargo xtask test` builds the image and sets `OOMTRACE_TEST_IMAGE` and `CONTAINERS_CONF`.
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Volume};
use serde::Deserialize as _;
use serde_json::Value;

use oomtrace::testing::kernel_report::Kmsg;

/// The victim containers' memory limit.
const LIMIT: u64 = 32 << 20;
const WAIT: Duration = Duration::from_secs(90);

/// The image to run, or None (with a message) when this run has none; under CI a missing image
/// fails the test.
fn image() -> Option<String> {
    if common::in_vm().is_some() {
        return None;
    }
    if let Some(why) = common::skip_reason() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    match std::env::var("OOMTRACE_TEST_IMAGE") {
        Ok(image) if !image.is_empty() => Some(image),
        _ if std::env::var_os("CI").is_some() || common::no_skip() => {
            panic!("OOMTRACE_TEST_IMAGE is not set: run the tests with `cargo xtask test`")
        }
        _ => {
            eprintln!(
                "SKIPPED: OOMTRACE_TEST_IMAGE is not set; run `cargo xtask test`, or set it to \
                 the name `cargo xtask image` prints and CONTAINERS_CONF to \
                 target/image/containers.conf"
            );
            None
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run podman: {e}"))
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "`podman {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The DaemonSet as `kubectl kustomize deploy/base` renders it.
fn rendered_daemonset() -> DaemonSet {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(repo().join("deploy/base"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {kubectl} (`cargo xtask bootstrap`): {e}"));
    assert!(out.status.success(), "kubectl kustomize failed");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    for doc in serde_norway::Deserializer::from_str(&text) {
        let value = serde_norway::Value::deserialize(doc).expect("YAML");
        if value["kind"].as_str() == Some("DaemonSet") {
            return serde_norway::from_value(value).expect("a DaemonSet");
        }
    }
    panic!("no DaemonSet in deploy/base")
}

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod template spec")
}

fn agent(spec: &PodSpec) -> &Container {
    spec.containers
        .iter()
        .find(|c| c.name == "oomtrace")
        .expect("the oomtrace container")
}

/// Host directories standing in for the DaemonSet's host paths that a test must not share
/// with the machine: the kubelet's log trees (absent here) and bpffs, where the agent pins
/// (a directory of its own on the host's bpffs). Removed on drop, pins uninstalled first.
struct HostDirs {
    logs: common::KubeletTree,
    bpffs: PathBuf,
}

impl HostDirs {
    fn new(tag: &str) -> Self {
        let logs = common::KubeletTree::new(tag);
        std::fs::create_dir_all(logs.0.join("pods")).expect("pods dir");
        let bpffs = PathBuf::from(format!(
            "/sys/fs/bpf/oomtrace-test-{tag}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&bpffs).expect("a bpffs directory");
        HostDirs { logs, bpffs }
    }

    /// The host path a DaemonSet volume is served from in this test.
    fn host_path(&self, volume: &Volume) -> String {
        let path = volume
            .host_path
            .as_ref()
            .unwrap_or_else(|| panic!("volume {} is not a hostPath", volume.name))
            .path
            .clone();
        match path.as_str() {
            "/var/log/pods" => self.logs.0.join("pods").display().to_string(),
            "/var/log/containers" => self.logs.0.join("containers").display().to_string(),
            "/sys/fs/bpf" => self.bpffs.display().to_string(),
            _ => path,
        }
    }
}

impl Drop for HostDirs {
    fn drop(&mut self) {
        let pins = self.bpffs.join("oomtrace");
        if pins.exists() {
            let _ = Command::new(env!("CARGO_BIN_EXE_oomtrace"))
                .arg("uninstall")
                .arg("--pin-dir")
                .arg(&pins)
                .output();
        }
        let _ = std::fs::remove_dir(&pins);
        let _ = std::fs::remove_dir(&self.bpffs);
    }
}

/// Removes a container or pod by name when the test ends, however it ends.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in &self.0 {
            let args: Vec<&str> = args.split(' ').collect();
            let _ = podman(&args);
        }
    }
}

/// The capability bits of names such as `BPF` (linux/capability.h).
fn cap_bit(name: &str) -> u32 {
    match name {
        "DAC_READ_SEARCH" => 2,
        "SYS_PTRACE" => 19,
        "SYS_ADMIN" => 21,
        "SYS_NICE" => 23,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("capability {other} not in this test's table"),
    }
}

/// A field of /proc/PID/status.
fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// The agent container's process, as the kernel sees it, holds exactly the DaemonSet's
/// privileges: its capabilities (those the host's bounding set has), no_new_privs, a seccomp
/// filter, a read-only root and read-only host mounts.
fn assert_confined(pid: u32, agent: &Container) {
    let sc = agent.security_context.as_ref().expect("securityContext");
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let wanted = caps
        .add
        .as_deref()
        .unwrap_or_default()
        .iter()
        .fold(0u64, |m, c| m | 1 << cap_bit(c));
    // This machine's root may itself lack some (its bounding set): the runtime cannot add those.
    let host_bounding =
        u64::from_str_radix(&status_field(std::process::id(), "CapBnd"), 16).expect("CapBnd");
    let effective = u64::from_str_radix(&status_field(pid, "CapEff"), 16).expect("CapEff");
    assert_eq!(
        effective,
        wanted & host_bounding,
        "effective capabilities {effective:#x}, wanted {wanted:#x} of the host's {host_bounding:#x}"
    );
    if wanted & !host_bounding != 0 {
        eprintln!(
            "note: the host's bounding set lacks {:#x} of the DaemonSet's capabilities",
            wanted & !host_bounding
        );
    }
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2", "a seccomp filter");
    assert_eq!(
        status_field(pid, "Uid").split_whitespace().next(),
        Some("0")
    );

    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let options_of = |point: &str| -> String {
        mountinfo
            .lines()
            .rev()
            .find_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.get(4) == Some(&point)).then(|| f.get(5).copied().unwrap_or("").to_string())
            })
            .unwrap_or_else(|| panic!("no mount at {point} in the agent's mountinfo"))
    };
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert!(
        options_of("/").split(',').any(|o| o == "ro"),
        "the root is read-only"
    );
    for m in agent.volume_mounts.as_deref().unwrap_or_default() {
        let ro = options_of(&m.mount_path).split(',').any(|o| o == "ro");
        assert_eq!(
            ro,
            m.read_only == Some(true),
            "mount {} read-only as the DaemonSet says",
            m.mount_path
        );
    }
}

/// The agent container's process id on the host.
fn container_pid(name: &str) -> u32 {
    podman_ok(&["inspect", "--format", "{{.State.Pid}}", name])
        .parse()
        .expect("a pid")
}

/// Lines of a child's stream, on a channel.
fn lines_of<R: Read + Send + 'static>(stream: R) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line that `want` accepts, echoing what passes to stderr.
fn wait_line(rx: &Receiver<String>, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if want(&line) => return line,
            Ok(line) => eprintln!("  | {line}"),
            Err(e) => panic!("no {what} within {WAIT:?}: {e}"),
        }
    }
}

/// A container the kernel OOM-kills: the image's own hog in a podman container limited to
/// [`LIMIT`], memory+swap included, as uid [`VICTIM_UID`] with [`VICTIM_GOMEMLIMIT`] in its
/// environment (an allowlisted memory setting, read from `/proc/PID/environ`, which is the
/// victim user's and mode 0400). Returns its id and its cgroup's limit as the cgroup file
/// said while it ran.
const VICTIM_UID: u32 = 65534;
const VICTIM_GOMEMLIMIT: &str = "24MiB";

fn kill_a_container(image: &str, tag: &str, comm: &str) -> (String, u64) {
    common::wait_for_oom_report_budget();
    let cidfile = std::env::temp_dir().join(format!("oomtrace-{tag}-{}.cid", std::process::id()));
    let _ = std::fs::remove_file(&cidfile);
    let limit = LIMIT.to_string();
    let mut child = Command::new("podman")
        .args(["run", "--rm", "--network", "none", "--memory", &limit])
        .args(["--memory-swap", &limit, "--cidfile"])
        .arg(&cidfile)
        .arg(format!("--user={VICTIM_UID}"))
        .arg(format!("--env=GOMEMLIMIT={VICTIM_GOMEMLIMIT}"))
        .args(["--entrypoint", "/usr/local/bin/oomtrace", image])
        .args(["hog", "--comm", comm, "--step-ms", "50"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("podman run");
    let deadline = Instant::now() + WAIT;
    let cid = loop {
        if let Ok(cid) = std::fs::read_to_string(&cidfile) {
            if cid.trim().len() == 64 {
                break cid.trim().to_string();
            }
        }
        assert!(Instant::now() < deadline, "no container id in {cidfile:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&cidfile);
    // The cgroup appears when the container starts, a moment after its id is written.
    let cg = loop {
        let found = [
            "memory/libpod_parent",
            "libpod_parent",
            "unified/libpod_parent",
        ]
        .iter()
        .map(|p| {
            PathBuf::from("/sys/fs/cgroup")
                .join(p)
                .join(format!("libpod-{cid}"))
        })
        .find(|p| p.is_dir());
        if let Some(cg) = found {
            break cg;
        }
        assert!(
            Instant::now() < deadline,
            "no /libpod_parent/libpod-{cid} cgroup"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let limit_file = ["memory.limit_in_bytes", "memory.max"]
        .iter()
        .map(|f| cg.join(f))
        .find(|f| f.exists())
        .expect("a limit file");
    // runc creates the cgroup, then writes the limit: read it once it is set.
    let limit = loop {
        let limit: u64 = std::fs::read_to_string(&limit_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(u64::MAX);
        if limit < 1 << 62 {
            break limit;
        }
        assert!(Instant::now() < deadline, "no limit in {limit_file:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let status = common::killed_by(&mut child, WAIT);
    let out = child.wait_with_output().expect("podman output");
    let code = out.status.code();
    assert!(
        status.is_none() && code == Some(137),
        "the victim container ends with 137 (SIGKILL): {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (cid, limit)
}

/// The kill record of container `cid` among JSON lines.
fn wait_kill_record(rx: &Receiver<String>, cid: &str) -> Value {
    let line = wait_line(rx, "kill record", |line| {
        serde_json::from_str::<Value>(line)
            .is_ok_and(|v| v["event"] == "oom_kill" && v["container"]["id"].as_str() == Some(cid))
    });
    serde_json::from_str(&line).expect("JSON")
}

/// The record names the victim container and agrees with the kernel's report of the kill.
fn assert_kill(record: &Value, cid: &str, comm: &str, limit: u64, kmsg: &mut Kmsg) {
    let path = format!("/libpod_parent/libpod-{cid}");
    assert_eq!(record["container"]["runtime"], "podman", "{record}");
    assert_eq!(record["oom"]["scope"], "container");
    assert_eq!(record["oom"]["memcg"]["path"], path.as_str());
    assert_eq!(record["oom"]["memcg"]["container"]["id"], cid);
    assert_eq!(record["oom"]["memcg"]["limit_bytes"], limit);
    assert_eq!(limit, LIMIT, "podman set the limit asked for");
    assert_eq!(record["victim"]["comm"], comm);
    assert_eq!(record["victim"]["cgroup"]["path"], path.as_str());
    let pid = record["victim"]["pid"].as_u64().expect("victim pid") as u32;
    let (report, _) = common::kernel_log_of(kmsg, pid, WAIT);
    let summary = report.summary.as_ref().expect("the oom-kill line");
    assert_eq!(summary.oom_memcg.as_deref(), Some(path.as_str()));
    assert_eq!(summary.task_memcg.as_deref(), Some(path.as_str()));
    assert_eq!(report.killed.comm, comm);
    assert_eq!(
        record["victim"]["anon_rss_bytes"].as_u64().map(|b| b >> 10),
        Some(report.killed.anon_rss_kb)
    );
    assert_eq!(record["victim"]["uid"], report.killed.uid);
    assert_eq!(report.killed.uid, VICTIM_UID);
    // Another user's 0400 environ: readable with the DaemonSet's capabilities.
    assert_eq!(
        record["victim"]["process"]["env"]["GOMEMLIMIT"], VICTIM_GOMEMLIMIT,
        "{}",
        record["victim"]["process"]
    );
}

/// `podman run` arguments that give a container the DaemonSet's security context, env and
/// host mounts ([`HostDirs`] standing in where the test must not share the host's), up to the
/// image; `seccomp` replaces the runtime's default profile.
fn daemonset_run_args(
    ds: &DaemonSet,
    dirs: &HostDirs,
    name: &str,
    seccomp: Option<&Path>,
) -> Vec<String> {
    let spec = pod_spec(ds);
    let agent = agent(spec);
    let sc = agent.security_context.as_ref().expect("securityContext");
    let mut args: Vec<String> = ["run", "--rm", "--name", name, "--network", "none"]
        .map(String::from)
        .to_vec();
    args.push(format!("--user={}", sc.run_as_user.expect("runAsUser")));
    args.push("--cap-drop=ALL".into());
    for cap in sc
        .capabilities
        .as_ref()
        .and_then(|c| c.add.as_deref())
        .unwrap_or_default()
    {
        args.push(format!("--cap-add={cap}"));
    }
    if sc.read_only_root_filesystem == Some(true) {
        args.push("--read-only".into());
    }
    if sc.allow_privilege_escalation == Some(false) {
        args.push("--security-opt=no-new-privileges".into());
    }
    assert_ne!(sc.privileged, Some(true));
    if let Some(profile) = seccomp {
        args.push(format!("--security-opt=seccomp={}", profile.display()));
    }
    for env in agent.env.as_deref().unwrap_or_default() {
        let value = match (&env.value, &env.value_from) {
            (Some(v), _) => v.clone(),
            // spec.nodeName, filled in by the kubelet.
            (None, Some(_)) => "image-test-node".to_string(),
            (None, None) => String::new(),
        };
        args.push(format!("--env={}={value}", env.name));
    }
    let volumes: BTreeMap<&str, &Volume> = spec
        .volumes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|v| (v.name.as_str(), v))
        .collect();
    for m in agent.volume_mounts.as_deref().unwrap_or_default() {
        let host = dirs.host_path(volumes[m.name.as_str()]);
        let ro = if m.read_only == Some(true) { ":ro" } else { "" };
        args.push(format!("--volume={host}:{}{ro}", m.mount_path));
    }
    args
}

#[test]
fn the_image_records_another_containers_kill_under_the_daemonsets_security_context() {
    let Some(image) = image() else { return };
    let ds = rendered_daemonset();
    let spec = pod_spec(&ds);
    let agent = agent(spec);
    let dirs = HostDirs::new("image");
    let name = format!("oomtrace-test-image-agent-{}", std::process::id());
    let _cleanup = Cleanup(vec![format!("rm -f -t 0 {name}")]);

    let profile = repo().join("deploy/seccomp/oomtrace.json");
    let mut args = daemonset_run_args(&ds, &dirs, &name, Some(&profile));
    args.push(image.clone());
    args.extend(agent.args.clone().unwrap_or_default());

    let mut kmsg = Kmsg::open_at_end().expect("/dev/kmsg");
    let mut child: Child = Command::new("podman")
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("podman run");
    eprintln!("podman {}", args.join(" "));
    let stdout = lines_of(child.stdout.take().expect("stdout"));
    let stderr = lines_of(child.stderr.take().expect("stderr"));
    wait_line(&stderr, "attached probes", |l| {
        l.contains("info: attached:")
    });

    let pid = container_pid(&name);
    assert_confined(pid, agent);

    let comm = "oomt-img-hog";
    let (cid, limit) = kill_a_container(&image, "image-victim", comm);
    let record = wait_kill_record(&stdout, &cid);
    assert_kill(&record, &cid, comm, limit, &mut kmsg);
    assert_eq!(record["k8s"]["node"]["name"], "image-test-node");

    // SIGTERM, as the kubelet stops a pod: the agent writes what it has and exits 0.
    podman_ok(&["stop", "-t", "30", &name]);
    let status = child.wait().expect("podman run exits");
    assert!(status.success(), "the agent exits 0 on SIGTERM: {status}");
    assert!(
        dirs.bpffs.join("oomtrace").is_dir(),
        "the agent pinned its programs in the bpffs mount"
    );
}

#[test]
fn under_podmans_default_seccomp_profile_the_agent_names_the_cause_and_the_fix() {
    let Some(image) = image() else { return };
    let ds = rendered_daemonset();
    let dirs = HostDirs::new("image-default-seccomp");
    let name = format!("oomtrace-test-image-check-{}", std::process::id());
    let _cleanup = Cleanup(vec![format!("rm -f -t 0 {name}")]);
    // The DaemonSet's context under podman's own default profile, which allows bpf() only with
    // CAP_SYS_ADMIN.
    let mut args = daemonset_run_args(&ds, &dirs, &name, None);
    args.extend([image, "check".to_string()]);
    let out = Command::new("podman")
        .args(&args)
        .output()
        .expect("podman run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "check fails: {stdout}\n{stderr}"
    );
    let caps = stdout
        .lines()
        .find_map(|l| l.strip_prefix("caps:     holds "))
        .unwrap_or_else(|| panic!("a caps line: {stdout}"));
    for cap in [
        "BPF (",
        "PERFMON (",
        "SYS_PTRACE (",
        "DAC_READ_SEARCH (",
        "SYS_NICE (",
    ] {
        assert!(caps.contains(cap), "holds {cap}: {caps}");
    }
    assert!(!caps.contains("SYS_ADMIN"), "{caps}");
    assert!(
        stdout.contains("seccomp:  a filter is installed"),
        "{stdout}"
    );
    let error = stderr
        .lines()
        .find(|l| l.starts_with("oomtrace: the kernel refused bpf()"))
        .unwrap_or_else(|| panic!("the refusal, named: {stderr}"));
    assert!(
        error.contains("a seccomp filter blocks it")
            && error.contains("deploy/seccomp/oomtrace.json"),
        "{error}"
    );
}

/// The DaemonSet's pod template as a Pod that `podman kube play` (4.3) runs, with what it
/// cannot take replaced: `spec.nodeName` in a `fieldRef` (a value instead), the pod's
/// `seccompProfile` (podman reads the older annotation: `localhost/<file>` under
/// `--seccomp-profile-root`), the host paths of [`HostDirs`], and the metrics port published
/// on `host_port`.
fn kube_play_pod(
    ds: &DaemonSet,
    dirs: &HostDirs,
    name: &str,
    host_port: u16,
    profile: &str,
) -> Pod {
    let template = &ds.spec.as_ref().expect("spec").template;
    let mut spec = template.spec.clone().expect("pod spec");
    let mut metadata = template.metadata.clone().unwrap_or_default();
    metadata.name = Some(name.to_string());
    metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            "seccomp.security.alpha.kubernetes.io/pod".into(),
            format!("localhost/{profile}"),
        );
    if let Some(sc) = spec.security_context.as_mut() {
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        sc.seccomp_profile = None;
    }
    for c in &mut spec.containers {
        for env in c.env.iter_mut().flatten() {
            if env.value_from.is_some() {
                env.value_from = None;
                env.value = Some("kubeplay-node".into());
            }
        }
        for port in c.ports.iter_mut().flatten() {
            port.host_port = Some(i32::from(host_port));
        }
    }
    for v in spec.volumes.iter_mut().flatten() {
        let path = dirs.host_path(v);
        if let Some(h) = v.host_path.as_mut() {
            h.path = path;
        }
    }
    Pod {
        metadata,
        spec: Some(spec),
        ..Default::default()
    }
}

/// `GET path` on 127.0.0.1:port: (status, body), or None when nothing answers yet.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// The x86_64 number of `uname`, the call the logging profile leaves out.
#[cfg(target_arch = "x86_64")]
const UNAME_NR: u32 = 63;
#[cfg(target_arch = "aarch64")]
const UNAME_NR: u32 = 160;

#[test]
fn the_daemonsets_pod_template_runs_under_podman_kube_play_within_the_seccomp_profile() {
    let Some(image) = image() else { return };
    let ds = rendered_daemonset();
    let agent_image = agent(pod_spec(&ds)).image.clone().expect("image");
    // The DaemonSet's image name is the one `cargo xtask image` also tags.
    podman_ok(&["image", "exists", &agent_image]);
    let dirs = HostDirs::new("kubeplay");

    // The shipped profile, but logging instead of refusing what it does not list, and without
    // uname (which the agent calls at start): the kernel logs that call, and any other the
    // profile would refuse.
    let root = std::env::temp_dir().join(format!("oomtrace-seccomp-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("profile root");
    let mut profile: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/seccomp/oomtrace.json")).expect("profile"),
    )
    .expect("profile JSON");
    profile["defaultAction"] = "SCMP_ACT_LOG".into();
    let mut left_out = 0;
    for rule in profile["syscalls"].as_array_mut().expect("syscalls") {
        if let Some(names) = rule["names"].as_array_mut() {
            let before = names.len();
            names.retain(|n| n != "uname");
            left_out += before - names.len();
        }
    }
    assert_eq!(left_out, 1, "the profile lists uname once");
    std::fs::write(root.join("log.json"), profile.to_string()).expect("write profile");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let name = format!("oomtrace-kubeplay-{}", std::process::id());
    let pod = kube_play_pod(&ds, &dirs, &name, port, "log.json");
    let yaml = root.join("pod.yaml");
    std::fs::write(&yaml, serde_norway::to_string(&pod).expect("YAML")).expect("write pod");
    let _cleanup = Cleanup(vec![format!("pod rm -f -t 0 {name}")]);

    let mut kmsg = Kmsg::open_at_end().expect("/dev/kmsg");
    // A reader of its own: the kill's report is read from `kmsg`, which skips what it passes.
    let mut audit = Kmsg::open_at_end().expect("/dev/kmsg");
    let yaml_arg = yaml.display().to_string();
    let root_arg = root.display().to_string();
    podman_ok(&[
        "kube",
        "play",
        "--seccomp-profile-root",
        &root_arg,
        &yaml_arg,
    ]);
    let container = format!("{name}-oomtrace");
    let pid = container_pid(&container);
    assert_confined(pid, agent(pod_spec(&ds)));

    // The readiness probe's path, on the published port, until the agent is up.
    let deadline = Instant::now() + WAIT;
    while http_get(port, "/readyz").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "/readyz never answered 200");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));

    let comm = "oomt-kube-hog";
    let (cid, limit) = kill_a_container(&image, "kubeplay-victim", comm);
    let logs = Command::new("podman")
        .args(["logs", "-f", &container])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("podman logs");
    let mut logs = Reap(logs);
    let stdout = lines_of(logs.0.stdout.take().expect("stdout"));
    let record = wait_kill_record(&stdout, &cid);
    assert_kill(&record, &cid, comm, limit, &mut kmsg);
    assert_eq!(record["k8s"]["node"]["name"], "kubeplay-node");
    let (status, metrics) = http_get(port, "/metrics").expect("/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("oomtrace_oom_kills_total"), "{metrics}");

    podman_ok(&["pod", "stop", "-t", "30", &name]);
    // Every call the agent made that the profile would refuse, as the kernel logged it
    // (`audit: type=1326 ... pid=<tgid> ... syscall=<nr>`).
    let logged: Vec<u32> = audit
        .read_available()
        .expect("kmsg")
        .iter()
        .filter(|r| r.message.contains("type=1326") && r.message.contains(&format!(" pid={pid} ")))
        .filter_map(|r| {
            r.message
                .split_whitespace()
                .find_map(|w| w.strip_prefix("syscall="))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    assert!(
        logged.contains(&UNAME_NR),
        "the kernel logged the left-out uname ({UNAME_NR}): {logged:?}"
    );
    let others: Vec<u32> = logged.into_iter().filter(|n| *n != UNAME_NR).collect();
    assert!(
        others.is_empty(),
        "deploy/seccomp/oomtrace.json would refuse these calls of the agent: {others:?}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// A child killed and reaped when dropped.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
