//! Golden files of every record shape of schema v1, built from fixed inputs through the code that
//! renders them (`Enricher::enrich`, `PressureMonitor::kill_section`,
//! `PressureMonitor::tick`/`kernel_reading`, then `output::schema`) and compared key by key, in order, with
//! `tests/golden/<shape>.json`. `OOMTRACE_BLESS=1` writes the files instead (see the README
//! there).
//!
//! Fixed here: the clock (`ClockMap::with_offset`, `PressureMonitor::with_clock`), the host name
//! and boot id (`Enricher::with_fixed_identity`), cgroup paths (learned as the kernel side hands
//! them over), the kubelet's log tree and the memory cgroups (fixture directories), and the API
//! cache (Pod objects). The cgroup id of a fixture directory is its inode number: the one place
//! it would reach the output (a reading's `cgroup.id`) gets a fixed id first.
use std::{
    cell::Cell,
    collections::{BTreeMap, BTreeSet, HashSet},
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use oomtrace_common::{
    field, hook, pressure_source, stat_slot, MemcgStats, MemoryPressureRecord, OomKillRecord,
    RecordKind, TaskRecord, INFERRED_MEMCG, INFERRED_NONE,
};
use serde_json::{json, Value};

use crate::{
    cgroup::{id_of, CgroupResolver, CgroupVersion, MemoryHierarchy},
    enrich::{
        domain::DomainReader,
        event::Enricher,
        kube::PodCache,
        names::Namer,
        process::{IdentitySource, ProcessIdentity},
    },
    output::schema,
    pressure::{
        monitor::{PressureMonitor, Reading, Sources},
        PressureSettings, StatHooksMode,
    },
    stream::{name_domain, Item, Kill, MemoryPressureEvent},
    timefmt::ClockMap,
};

/// Wall time = ktime + this: ktime 0 is 2026-11-22T03:00:00Z.
const CLOCK_OFFSET_NS: i128 = 1_795_316_400_000_000_000;
const HOST: &str = "ip-10-0-3-17";
const BOOT_ID: &str = "0f5c1d2e-7a8b-4c9d-8e1f-2a3b4c5d6e7f";
const NODE: Option<&str> = Some("node-1");
const KILL_NS: u64 = 5_000_123_456_789;
const MIB: u64 = 1 << 20;

const WEB_UID: &str = "5f0a8c1e-3b2d-4c6e-9f7a-1b2c3d4e5f60";
const DB_UID: &str = "0b3a3f2e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
const QUEUE_UID: &str = "4a9b5977-caf5-465b-a4c9-6edb51efc037";
const LONE_UID: &str = "bf7b80bd-3752-4893-8762-c684b7f89690";
const APP_ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";
const SIDECAR_ID: &str = "a013de9b4fbe295084e4c6f1a097348e24b5514b158920d983020e604a6f78e4";
const DB_ID: &str = "1f33c702134d0015441cb192e6d2449ecec465f8a16ce67b4b7066e4f8250f63";
const QUEUE_ID: &str = "dd93a249e9e3d495fa2e82987471f2b60d5461150268a43980e46b9cdb65eb62";
const LONE_ID: &str = "2e0665bf638f054758b158c28e81028f05361469421e2a31b709462ddc9a7c49";
const CTR_ID: &str = "0cb2b64f38fbf89a7130ab8b5d5ff72ea92641b81a79c3798ae97ecc67d76fd6";
const DOCKER_ID: &str = "7f3258c20e11c289c1d36424aece5529301424cb57bad51129354275e237d49b";
const PODMAN_ID: &str = "9c1e4f3a2b7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f";

// Cgroup ids as the kernel side reports them, with their paths in `cgroup_paths`.
const CG_HOG: u64 = 4101;
const CG_WORKLOAD: u64 = 4102;
const CG_WEB_SVC: u64 = 4103;
const CG_BATCH_SVC: u64 = 4104;
const CG_WEB_POD: u64 = 4105;
const CG_WEB_APP: u64 = 4106;
const CG_WEB_SIDECAR: u64 = 4107;
const CG_DB: u64 = 4108;
const CG_QUEUE: u64 = 4109;
const CG_LONE: u64 = 4110;
const CG_CTR: u64 = 4111;
const CG_DOCKER: u64 = 4112;
const CG_PODMAN: u64 = 4113;
const CG_NGINX: u64 = 4114;
const CG_SESSION: u64 = 4115;
const CG_APP_SVC: u64 = 4116;
/// Kernel counter keys (any id the resolver knows a path for).
const K_STATS: u64 = 0x7f00_0000_0000_0001;
const K_UNKNOWN: u64 = 0x7f00_0000_0000_00ff;

fn cgroup_paths() -> Vec<(u64, String)> {
    let web_pod = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        WEB_UID.replace('-', "_")
    );
    let mut paths = vec![
        (CG_HOG, "/oomtrace-test-hog".into()),
        (CG_WORKLOAD, "/workload.slice".into()),
        (CG_WEB_SVC, "/workload.slice/web.service".into()),
        (CG_BATCH_SVC, "/workload.slice/batch.service".into()),
        (
            CG_WEB_APP,
            format!("{web_pod}/cri-containerd-{APP_ID}.scope"),
        ),
        (
            CG_WEB_SIDECAR,
            format!("{web_pod}/cri-containerd-{SIDECAR_ID}.scope"),
        ),
        (CG_WEB_POD, web_pod),
        (CG_DB, format!("/kubepods/burstable/pod{DB_UID}/{DB_ID}")),
        (
            CG_QUEUE,
            format!("/kubepods/besteffort/pod{QUEUE_UID}/{QUEUE_ID}"),
        ),
        (
            CG_LONE,
            format!(
                "/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{LONE_ID}.scope",
                LONE_UID.replace('-', "_")
            ),
        ),
        (CG_CTR, format!("/default/{CTR_ID}")),
        (CG_DOCKER, format!("/system.slice/docker-{DOCKER_ID}.scope")),
        (CG_PODMAN, format!("/libpod_parent/libpod-{PODMAN_ID}")),
        (CG_NGINX, "/system.slice/nginx.service".into()),
        (
            CG_SESSION,
            "/user.slice/user-1000.slice/session-3.scope".into(),
        ),
        (CG_APP_SVC, "/system.slice/app.service".into()),
    ];
    paths.extend((0..OWNER_KINDS.len()).map(|n| {
        let (_, _, cg, path) = owned_pod(n);
        (cg, path)
    }));
    paths
}

/// Owner kinds with an OpenTelemetry `k8s.<kind>.name` key besides Deployment: one pod each,
/// known only to the API, without labels.
const OWNER_KINDS: [&str; 5] = ["ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob"];

/// Uid, container id, cgroup id and path of the pod owned by an `OWNER_KINDS[n]`.
fn owned_pod(n: usize) -> (String, String, u64, String) {
    let uid = format!("{n:08x}-0000-4000-8000-{n:012x}");
    let id = format!("{:064x}", 0xc0ff_ee00 + n);
    let path = format!("/kubepods/besteffort/pod{uid}/{id}");
    (uid, id, 4200 + n as u64, path)
}

fn path_of(id: u64) -> String {
    cgroup_paths()
        .into_iter()
        .find_map(|(i, p)| (i == id).then_some(p))
        .expect("a known id")
}

/// A directory under the system's temp dir, removed with its contents on drop.
struct Fixture(PathBuf);

impl Fixture {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "oomtrace-golden-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create fixture dir");
        Self(dir)
    }

    fn write(&self, rel: &str, contents: &str) -> &Self {
        let path = self.0.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create fixture subdir");
        }
        std::fs::write(&path, contents).expect("write fixture file");
        self
    }

    /// A kubelet log container entry: `pods/<ns>_<pod>_<uid>/<container>/0.log` and its
    /// `containers/<pod>_<ns>_<container>-<id>.log` symlink.
    fn kubelet_container(&self, (ns, pod, uid): (&str, &str, &str), container: &str, id: &str) {
        let log = format!("pods/{ns}_{pod}_{uid}/{container}/0.log");
        self.write(&log, "");
        self.write("containers/.keep", "");
        let link = self
            .0
            .join(format!("containers/{pod}_{ns}_{container}-{id}.log"));
        std::os::unix::fs::symlink(self.0.join(log), link).expect("container log symlink");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Pod object as the API server sends it.
fn pod_json(
    (ns, name, uid): (&str, &str, &str),
    labels: Value,
    owner: (&str, &str),
    containers: &[(&str, &str)],
) -> Value {
    json!({
        "metadata": {
            "namespace": ns, "name": name, "uid": uid, "labels": labels,
            "ownerReferences": [{"kind": owner.0, "name": owner.1, "controller": true}],
        },
        "spec": {"containers": containers.iter().map(|(n, _)| json!({"name": n})).collect::<Vec<_>>()},
        "status": {"containerStatuses": containers.iter()
            .map(|(n, id)| json!({"name": n, "containerID": format!("containerd://{id}")}))
            .collect::<Vec<_>>()},
    })
}

/// What names workloads: the kubelet's log tree (web and db pods) and the API cache (web with
/// a Deployment owner and labels; queue, missing from the log tree, with a custom owner).
struct Names {
    logs: Fixture,
    api: PodCache,
}

impl Names {
    fn new() -> Self {
        let logs = Fixture::new("kubelet");
        let web = ("shop", "web-7d9f8b6c5-x2k4q", WEB_UID);
        logs.kubelet_container(web, "app", APP_ID);
        logs.kubelet_container(web, "sidecar", SIDECAR_ID);
        logs.kubelet_container(("shop", "db-0", DB_UID), "postgres", DB_ID);
        let api = PodCache::new(Duration::from_secs(600), 100);
        let pods = [
            pod_json(
                web,
                json!({"app": "web", "pod-template-hash": "7d9f8b6c5"}),
                ("ReplicaSet", "web-7d9f8b6c5"),
                &[("app", APP_ID), ("sidecar", SIDECAR_ID)],
            ),
            pod_json(
                ("jobs", "queue-0", QUEUE_UID),
                json!({"app": "queue"}),
                ("Workflow", "nightly"),
                &[("worker", QUEUE_ID)],
            ),
        ];
        let owned = OWNER_KINDS.iter().enumerate().map(|(n, kind)| {
            let (uid, id, _, _) = owned_pod(n);
            let lower = kind.to_lowercase();
            let pod = ("batch", format!("{lower}-pod"), uid);
            let owner = (*kind, format!("{lower}-owner"));
            pod_json(
                (pod.0, &pod.1, &pod.2),
                json!({}),
                (owner.0, &owner.1),
                &[("main", &id)],
            )
        });
        for p in pods.into_iter().chain(owned) {
            assert!(api.upsert_pod_json(&p), "a valid Pod object: {p}");
        }
        Self { logs, api }
    }

    /// An enricher as `tail`/`agent` build it, with fixed time, host and boot id, and the
    /// kernel-read paths of [`cgroup_paths`] (no hierarchy on disk to walk).
    fn enricher(&self, node: Option<&str>) -> (Enricher, CgroupResolver) {
        let hierarchy = MemoryHierarchy {
            root: PathBuf::from("/nonexistent/oomtrace-golden"),
            version: CgroupVersion::V2,
        };
        let mut resolver = CgroupResolver::new(hierarchy);
        resolver.learn(cgroup_paths());
        let constraints = [
            (0, "none"),
            (1, "cpuset"),
            (2, "memory_policy"),
            (3, "memcg"),
        ];
        let namer = Namer::new(Some(self.logs.0.clone())).with_api(self.api.clone());
        let e = Enricher::new(constraints.into_iter().collect(), 12)
            .with_names(namer, node.map(String::from))
            .with_fixed_identity(ClockMap::with_offset(CLOCK_OFFSET_NS), HOST, BOOT_ID);
        (e, resolver)
    }

    /// A near-limit reading as the stream makes it an event, as JSON.
    fn pressure_json(&self, node: Option<&str>, reading: Reading) -> Value {
        let (mut e, _) = self.enricher(node);
        let names = reading.path.as_deref().and_then(|p| e.names_of(p));
        let ev = MemoryPressureEvent {
            time_unix_ns: e.wall_ns(reading.ktime_ns),
            host: e.host().to_string(),
            node: e.node().map(str::to_string),
            reading,
            names,
        };
        schema::item_value(&Item::Pressure(Box::new(ev)))
    }
}

fn set_task(t: &mut TaskRecord, pid: u32, comm: &str, memcg_id: u64) {
    t.pid = pid;
    t.tgid = pid;
    t.comm = Default::default();
    t.comm[..comm.len()].copy_from_slice(comm.as_bytes());
    t.memcg_id = memcg_id;
}

/// A memcg OOM as `tp_btf/mark_victim` reports it where the constraint is inferred (this
/// machine kind): every victim field, victim = trigger, all in `/oomtrace-test-hog`.
pub(super) fn base_record() -> OomKillRecord {
    let mut r = OomKillRecord {
        kind: RecordKind::OomKill as u32,
        hooks: hook::TP_BTF_MARK_VICTIM,
        fields: field::VICTIM_PID
            | field::VICTIM_TGID
            | field::VICTIM_COMM
            | field::VICTIM_MEMCG
            | field::UID
            | field::OOM_SCORE_ADJ
            | field::VICTIM_MM
            | field::PGTABLES
            | field::TRIGGER_MEMCG
            | field::CONSTRAINT_INFERRED
            | field::OOM_MEMCG
            | field::SIGKILL_PENDING
            | field::INCIDENT,
        constraint: INFERRED_MEMCG,
        ktime_ns: KILL_NS,
        incident: 3,
        uid: 65534,
        oom_score_adj: 500,
        total_vm_bytes: 70_012 << 10,
        anon_rss_bytes: 63_512 << 10,
        file_rss_bytes: 1_280 << 10,
        shmem_rss_bytes: 4 << 10,
        pgtables_bytes: 172 << 10,
        oom_memcg_id: CG_HOG,
        oom_memcg_usage_pages: 16384,
        oom_memcg_limit_pages: 16384,
        seq: 12,
        ..Default::default()
    };
    set_task(&mut r.victim, 4242, "hog", CG_HOG);
    r.trigger = r.victim;
    r
}

/// Victim, trigger and OOM memcg in these cgroups (the trigger is the victim unless `trigger`
/// names another task).
fn place(
    r: &mut OomKillRecord,
    victim: (u32, &str, u64),
    trigger: Option<(u32, &str, u64)>,
    oom: u64,
) {
    set_task(&mut r.victim, victim.0, victim.1, victim.2);
    r.trigger = r.victim;
    if let Some((pid, comm, cg)) = trigger {
        set_task(&mut r.trigger, pid, comm, cg);
    }
    r.oom_memcg_id = oom;
}

/// The kernel's own context from `oom_kill_process` (`hook`: fentry or kprobe).
fn kernel_context(r: &mut OomKillRecord, hook: u32, constraint: u32, totalpages: u64) {
    r.hooks |= hook;
    r.fields = (r.fields & !field::CONSTRAINT_INFERRED) | field::KERNEL_CONTEXT | field::INCIDENT;
    r.constraint = constraint;
    r.gfp_mask = 0xcc0;
    r.order = 0;
    r.totalpages = totalpages;
    r.points = 16_123;
    r.incident = 0xffff_8881_0a2b_3c00;
}

type Edit = fn(&mut OomKillRecord);

/// Kill shapes from records: name, node name, events lost, and the change to [`base_record`].
fn kill_cases() -> Vec<(&'static str, Option<&'static str>, u64, Edit)> {
    vec![
        ("inferred_memcg", None, 0, |_| {}),
        ("kernel_context", None, 2, |r| {
            kernel_context(r, hook::FENTRY_OOM_KILL_PROCESS, 3, 65536);
            let trigger = (4300, "batch", CG_BATCH_SVC);
            place(r, (4242, "web", CG_WEB_SVC), Some(trigger), CG_WORKLOAD);
        }),
        ("classic_tracepoint", None, 0, |r| {
            r.hooks = hook::TRACEPOINT_MARK_VICTIM;
            r.fields &= !(field::VICTIM_TGID | field::VICTIM_MEMCG | field::SIGKILL_PENDING);
        }),
        ("already_exiting", None, 0, |r| {
            r.fields &= !field::SIGKILL_PENDING;
        }),
        ("kprobe_fallbacks", None, 0, |r| {
            r.hooks = hook::KPROBE_MARK_OOM_VICTIM;
            kernel_context(r, hook::KPROBE_OOM_KILL_PROCESS, 3, 16384);
        }),
        ("global_inferred", None, 0, |r| {
            r.constraint = INFERRED_NONE;
            r.fields &= !(field::OOM_MEMCG | field::INCIDENT);
            place(r, (2210, "python3", CG_SESSION), None, 0);
        }),
        ("global_kernel", None, 0, |r| {
            kernel_context(r, hook::KPROBE_OOM_KILL_PROCESS, 0, 6_123_456);
            r.fields &= !field::OOM_MEMCG;
            place(
                r,
                (2210, "python3", CG_SESSION),
                Some((2300, "cc1plus", CG_NGINX)),
                0,
            );
        }),
        ("k8s_systemd_driver", NODE, 0, |r| {
            let trigger = (4250, "envoy", CG_WEB_SIDECAR);
            place(r, (4242, "node", CG_WEB_APP), Some(trigger), CG_WEB_POD);
        }),
        ("k8s_cgroupfs_driver", NODE, 0, |r| {
            place(r, (7001, "postgres", CG_DB), None, CG_DB);
        }),
        ("k8s_api_only", NODE, 0, |r| {
            place(r, (7101, "worker", CG_QUEUE), None, CG_QUEUE);
        }),
        ("k8s_unnamed_pod", NODE, 0, |r| {
            place(r, (7201, "java", CG_LONE), None, CG_LONE);
        }),
        ("containerd", None, 0, |r| {
            place(r, (7301, "redis-server", CG_CTR), None, CG_CTR);
        }),
        ("docker", None, 0, |r| {
            place(r, (7401, "nginx", CG_DOCKER), None, CG_DOCKER);
        }),
        ("podman", None, 0, |r| {
            place(r, (7501, "httpd", CG_PODMAN), None, CG_PODMAN);
        }),
        ("systemd_unit", None, 0, |r| {
            place(r, (7601, "nginx", CG_NGINX), None, CG_NGINX);
        }),
    ]
}

/// Kills with the victim's `process`: read at its exec with every part, and the identity of
/// the parent of a forked child, cut, without what another user's process withholds.
fn process_kills(names: &Names) -> Vec<(String, Value)> {
    let args = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let exec = ProcessIdentity {
        executable: Some("/usr/local/bin/node".into()),
        args: args(&[
            "node",
            "--max-old-space-size=4096",
            "--db-password",
            "***",
            "server.js",
        ]),
        command_line_bytes: 64,
        truncated: false,
        env: [
            ("NODE_OPTIONS", "--max-semi-space-size=64 --api-token=***"),
            ("UV_THREADPOOL_SIZE", "8"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        env_read: true,
        container_init: Some(true),
        source: IdentitySource::Exec,
    };
    let parent = ProcessIdentity {
        executable: None,
        args: args(&["gunicorn:", "master", "[app:wsgi]", "--workers", "4"]),
        command_line_bytes: 4816,
        truncated: true,
        env: BTreeMap::new(),
        env_read: false,
        container_init: None,
        source: IdentitySource::Parent,
    };
    [("process_identity", exec), ("process_parent", parent)]
        .into_iter()
        .map(|(name, process)| {
            let mut r = base_record();
            place(&mut r, (4242, "node", CG_WEB_APP), None, CG_WEB_APP);
            let (mut e, mut res) = names.enricher(NODE);
            let kill = Kill::new(
                e.enrich(&r, 0, Some(&mut res)),
                None,
                Some(process),
                None,
                4096,
            );
            let v = schema::item_value(&Item::Kill(Box::new(kill)));
            (format!("oom_kill.{name}"), v)
        })
        .collect()
}

thread_local! {
    /// The pressure monitor's clock in these tests (ns).
    static NOW: Cell<u64> = const { Cell::new(0) };
}

fn now() -> u64 {
    NOW.with(Cell::get)
}

fn set_now_ms(ms: u64) {
    NOW.with(|n| n.set(ms * 1_000_000));
}

fn monitor(
    root: &Fixture,
    version: CgroupVersion,
    memcg_stat: bool,
    reclaim: bool,
) -> PressureMonitor {
    let settings = PressureSettings {
        threshold: 0.9,
        interval: Duration::from_secs(30),
        max_cgroups: 100,
        stat_hooks: if memcg_stat {
            StatHooksMode::Always
        } else {
            StatHooksMode::Never
        },
        hooks_threshold: 0.75,
        hooks_quiet: Duration::from_secs(60),
    };
    let hierarchy = MemoryHierarchy {
        root: root.0.clone(),
        version,
    };
    let sources = Sources {
        memcg_stat,
        reclaim,
    };
    PressureMonitor::new(settings, sources, hierarchy, 12).with_clock(now)
}

/// A resolver over a fixture hierarchy, as the stream lends the monitor.
fn fixture_resolver(f: &Fixture, version: CgroupVersion) -> CgroupResolver {
    CgroupResolver::new(MemoryHierarchy {
        root: f.0.clone(),
        version,
    })
}

/// Cumulative kernel counters: anon and file pages, slab bytes, reclaim passes and their ms.
fn stats(anon: i64, file: i64, slab: i64, reclaims: u64, reclaim_ms: u64) -> MemcgStats {
    let mut s = MemcgStats {
        updates: (anon + file) as u64,
        reclaims,
        reclaim_ns: reclaim_ms * 1_000_000,
        ..Default::default()
    };
    s.charged[stat_slot::ANON] = anon;
    s.charged[stat_slot::FILE] = file;
    s.charged[stat_slot::SLAB] = slab;
    s
}

/// One sample a second: at each `(ms, usage MiB, counters)` the usage file says that and the
/// kernel's counters for [`K_STATS`] are these; returns the monitor's near-limit readings.
fn run_ticks(
    m: &mut PressureMonitor,
    res: &mut CgroupResolver,
    f: &Fixture,
    usage_file: &str,
    ticks: &[(u64, u64, MemcgStats)],
) -> Vec<Reading> {
    let mut readings = Vec::new();
    for (ms, mib, counters) in ticks {
        f.write(usage_file, &format!("{}\n", mib * MIB));
        set_now_ms(*ms);
        readings.extend(m.tick(&[(K_STATS, *counters)], res));
    }
    readings
}

const V2_STAT: &str = "anon 48234496\nfile 9437184\nkernel 2097152\nkernel_stack 131072\n\
pagetables 409600\nsock 0\nshmem 4096\nfile_mapped 2097152\nslab 1245184\n";
const V1_STAT: &str = "cache 2490368\nrss 27262976\nshmem 0\nswap 0\npgfault 9312\n\
total_cache 2490368\ntotal_rss 27262976\ntotal_shmem 0\ntotal_swap 0\n";

/// Kills whose OOM memcg has a `pressure` section, each from its own monitor over a fixture
/// hierarchy where `/oomtrace-test-hog` is the OOM cgroup.
fn pressure_kills(names: &Names) -> Vec<(String, Value)> {
    let hog = "oomtrace-test-hog";
    let mut out = Vec::new();
    // (name, version, (memcg_stat, reclaim), files, ticks, (kill ms, OOM memcg usage = limit
    // pages, kernel counters at the kill, µs from the kill to the read of `memory.stat` after it))
    type Case<'a> = (
        &'a str,
        CgroupVersion,
        (bool, bool),
        Vec<(&'a str, &'a str)>,
        Vec<(u64, u64, MemcgStats)>,
        (u64, u64, MemcgStats, u64),
    );
    let cases: Vec<Case> = vec![
        (
            // Both kernel sources, cgroup v2: charges, reclaim, stat before, events, PSI.
            "pressure_full",
            CgroupVersion::V2,
            (true, true),
            vec![
                ("memory.max", "67108864\n"),
                ("memory.stat", V2_STAT),
                (
                    "memory.events",
                    "low 0\nhigh 0\nmax 412\noom 1\noom_kill 1\noom_group_kill 0\n",
                ),
                (
                    "memory.events.local",
                    "low 0\nhigh 0\nmax 412\noom 1\noom_kill 1\n",
                ),
                (
                    "memory.pressure",
                    "some avg10=12.50 avg60=3.10 avg300=0.70 total=2512345\n\
                     full avg10=10.02 avg60=2.50 avg300=0.55 total=2010987\n",
                ),
            ],
            vec![
                (100_000, 20, stats(5_120, 64, 40_960, 0, 0)),
                (101_000, 30, stats(7_680, 80, 49_152, 0, 0)),
                (102_000, 40, stats(10_240, 96, 57_344, 1, 2)),
                (103_000, 52, stats(13_312, 96, 65_536, 3, 9)),
                (104_000, 60, stats(15_360, 100, 69_632, 6, 21)),
            ],
            (104_600, 16384, stats(16_384, 100, 73_728, 8, 30), 50_000),
        ),
        (
            // cgroup v1, reclaim tracepoints only: v1 stat and events, no PSI.
            "pressure_v1",
            CgroupVersion::V1,
            (false, true),
            vec![
                ("memory.limit_in_bytes", "33554432\n"),
                ("memory.stat", V1_STAT),
                ("memory.kmem.usage_in_bytes", "1314816\n"),
                ("memory.failcnt", "1187\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
                ),
            ],
            vec![
                (200_000, 20, stats(0, 0, 0, 0, 0)),
                (201_000, 30, stats(0, 0, 0, 4, 7)),
            ],
            (201_800, 8192, stats(0, 0, 0, 9, 15), 20_000),
        ),
        (
            // No kernel source, a cgroup not watched (no limit file), only `memory.stat`: the
            // kill point and a stat read after the kill.
            "pressure_minimal",
            CgroupVersion::V2,
            (false, false),
            vec![("memory.stat", V2_STAT)],
            vec![],
            (5_000_123, 16384, stats(0, 0, 0, 0, 0), 5_250),
        ),
    ];
    for (name, version, (memcg_stat, reclaim), files, ticks, (kill_ms, pages, at_kill, after_us)) in
        cases
    {
        let f = Fixture::new(name);
        for (file, text) in &files {
            f.write(&format!("{hog}/{file}"), text);
        }
        let mut m = monitor(&f, version, memcg_stat, reclaim);
        let mut res = fixture_resolver(&f, version);
        res.learn([(K_STATS, format!("/{hog}"))]);
        let usage_file = match version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        };
        run_ticks(&mut m, &mut res, &f, &format!("{hog}/{usage_file}"), &ticks);
        let mut r = base_record();
        r.ktime_ns = kill_ms * 1_000_000;
        r.oom_memcg_usage_pages = pages;
        r.oom_memcg_limit_pages = pages;
        let (mut e, mut er) = names.enricher(None);
        let ev = e.enrich(&r, 0, Some(&mut er));
        // The monitor knows the fixture's cgroup by its inode; the record by a fixed id.
        let mut memcg = ev.oom.memcg.clone().expect("an OOM memcg");
        memcg.cgroup.id = id_of(&f.0.join(hog)).expect("fixture inode");
        NOW.with(|n| n.set(ev.ktime_ns + after_us * 1000));
        let pressure = m.kill_section(
            memcg.cgroup.id,
            memcg.cgroup.path.as_deref(),
            memcg.usage_bytes,
            memcg.limit_bytes,
            ev.ktime_ns,
            &|id| (id == K_STATS).then_some(at_kill),
        );
        out.push((
            format!("oom_kill.{name}"),
            schema::kill_value(&ev, Some(&pressure)),
        ));
    }
    out
}

/// A `/proc` entry: (anon, file, shmem, swap, page tables) in kB.
fn proc_entry(f: &Fixture, pid: u32, comm: &str, kb: [u64; 5], adj: i32, cgroup: &str) {
    let [anon, file, shmem, swap, pte] = kb;
    f.write(
        &format!("proc/{pid}/status"),
        &format!(
            "Name:\t{comm}\nRssAnon:\t{anon} kB\nRssFile:\t{file} kB\nRssShmem:\t{shmem} kB\n\
             VmPTE:\t{pte} kB\nVmSwap:\t{swap} kB\n"
        ),
    )
    .write(&format!("proc/{pid}/oom_score_adj"), &format!("{adj}\n"))
    .write(&format!("proc/{pid}/cgroup"), &format!("0::{cgroup}\n"));
}

/// Kills with their OOM domain, each read by a `DomainReader` over a fixture `/proc` and
/// cgroup v2 tree, named as the stream names it.
fn domain_kills(names: &Names) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let reader = |f: &Fixture| {
        let h = MemoryHierarchy {
            root: f.0.join("cg"),
            version: CgroupVersion::V2,
        };
        DomainReader::new(h, 4096)
            .with_proc_root(f.0.join("proc"))
            .with_clock(now)
    };
    let kill = |names: &Names, r: &OomKillRecord, f: &Fixture, node| {
        let (mut e, mut res) = names.enricher(node);
        let event = e.enrich(r, 0, Some(&mut res));
        NOW.with(|n| n.set(event.ktime_ns + 2_345_678));
        let domain = reader(f).read(&event);
        let domain = Some(name_domain(&mut e, domain));
        schema::item_value(&Item::Kill(Box::new(Kill::new(
            event, None, None, domain, 4096,
        ))))
    };

    // A pod's limit (64 MiB, memory.oom.group off): the app container's `node` (the victim)
    // and a helper, the sidecar's `envoy` holding most of it, a kubelet-style pause process
    // that can never be chosen.
    let f = Fixture::new("domain-pod");
    let pod = path_of(CG_WEB_POD);
    let (app, sidecar) = (path_of(CG_WEB_APP), path_of(CG_WEB_SIDECAR));
    f.write(&format!("cg{pod}/cgroup.procs"), "4200\n")
        .write(&format!("cg{pod}/memory.max"), "67108864\n")
        .write(&format!("cg{pod}/memory.oom.group"), "0\n")
        .write(&format!("cg{app}/cgroup.procs"), "4242\n4243\n")
        .write(&format!("cg{app}/memory.current"), "9437184\n")
        .write(&format!("cg{app}/memory.max"), "max\n")
        .write(&format!("cg{sidecar}/cgroup.procs"), "4250\n")
        .write(&format!("cg{sidecar}/memory.current"), "56623104\n")
        .write(&format!("cg{sidecar}/memory.max"), "67108864\n")
        .write("proc/meminfo", "MemTotal: 16777216 kB\nSwapTotal: 0 kB\n");
    proc_entry(&f, 4200, "pause", [64, 0, 0, 0, 4], -998, &pod);
    proc_entry(&f, 4242, "node", [2048, 1280, 4, 0, 172], 500, &app);
    proc_entry(&f, 4243, "node-worker", [6144, 1024, 0, 0, 48], 500, &app);
    proc_entry(&f, 4250, "envoy", [53248, 2048, 0, 0, 140], -997, &sidecar);
    let mut r = base_record();
    let trigger = (4250, "envoy", CG_WEB_SIDECAR);
    place(
        &mut r,
        (4242, "node", CG_WEB_APP),
        Some(trigger),
        CG_WEB_POD,
    );
    out.push(("oom_kill.domain_pod".into(), kill(names, &r, &f, NODE)));

    // A global OOM from the kernel's context: every process, the node's limits.
    let f = Fixture::new("domain-global");
    let session = path_of(CG_SESSION);
    let nginx = path_of(CG_NGINX);
    f.write("cg/system.slice/memory.max", "4294967296\n")
        .write("cg/system.slice/nginx.service/memory.max", "1073741824\n")
        .write(
            &format!("cg{}/memory.max", path_of(CG_WEB_POD)),
            "67108864\n",
        )
        .write("proc/meminfo", "MemTotal: 4194304 kB\nSwapTotal: 0 kB\n");
    proc_entry(&f, 1, "systemd", [8192, 4096, 0, 0, 96], 0, "/init.scope");
    proc_entry(&f, 2210, "python3", [2048, 512, 0, 0, 64], 0, &session);
    proc_entry(
        &f,
        2300,
        "cc1plus",
        [1_536_000, 8192, 0, 0, 3072],
        0,
        &nginx,
    );
    proc_entry(
        &f,
        2400,
        "sshd",
        [4096, 2048, 0, 0, 64],
        -1000,
        "/system.slice/ssh.service",
    );
    f.write("proc/2/status", "Name:\tkthreadd\n")
        .write("proc/2/oom_score_adj", "0\n");
    let mut r = base_record();
    kernel_context(&mut r, hook::KPROBE_OOM_KILL_PROCESS, 0, 1_048_576);
    r.fields &= !field::OOM_MEMCG;
    r.oom_score_adj = 0;
    r.anon_rss_bytes = 2_048_000 << 10;
    r.file_rss_bytes = 8192 << 10;
    r.shmem_rss_bytes = 0;
    r.pgtables_bytes = 4096 << 10;
    r.points = 515_072;
    place(
        &mut r,
        (2210, "python3", CG_SESSION),
        Some((2300, "cc1plus", CG_NGINX)),
        0,
    );
    out.push(("oom_kill.domain_global".into(), kill(names, &r, &f, None)));
    out
}

/// `memory_pressure` events from each source.
fn pressure_events(names: &Names) -> Vec<(String, Value)> {
    let mut out = Vec::new();

    // The kernel's near-limit records (stat and reclaim) for a watched systemd unit with a
    // timeline, and for a cgroup nobody knows (no path, no names, no figures).
    let f = Fixture::new("kernel");
    let app = "system.slice/app.service";
    f.write(&format!("{app}/memory.max"), "67108864\n")
        .write(&format!("{app}/memory.stat"), V2_STAT);
    let mut m = monitor(&f, CgroupVersion::V2, true, true);
    let mut res = fixture_resolver(&f, CgroupVersion::V2);
    res.learn([(K_STATS, format!("/{app}"))]);
    let ticks = [
        (300_000, 48, stats(12_288, 10, 4096, 2, 3)),
        (301_000, 56, stats(14_336, 12, 8192, 5, 11)),
    ];
    let none = run_ticks(
        &mut m,
        &mut res,
        &f,
        &format!("{app}/memory.current"),
        &ticks,
    );
    assert!(
        none.is_empty(),
        "the kernel detects, the 1 s samples do not: {none:?}"
    );
    let record = |source, cgroup_id, pid, comm: &str| {
        let mut r = MemoryPressureRecord {
            kind: RecordKind::MemoryPressure as u32,
            source,
            ktime_ns: 301_400_000_000,
            cgroup_id,
            usage_pages: 14_900,
            limit_pages: 16_384,
            threshold_per_10k: 9000,
            pid,
            seq: 7,
            ..Default::default()
        };
        r.comm[..comm.len()].copy_from_slice(comm.as_bytes());
        r
    };
    let app_inode = id_of(&f.0.join(app)).expect("fixture inode");
    let mut stat = m
        .kernel_reading(
            &record(pressure_source::STAT, app_inode, 3101, "app"),
            &mut res,
        )
        .expect("an anon working set near the limit stands");
    stat.cgroup_id = CG_APP_SVC;
    let reclaim = m
        .kernel_reading(
            &record(pressure_source::RECLAIM, K_UNKNOWN, 3150, "python3"),
            &mut res,
        )
        .expect("a cgroup without a readable memory.stat keeps its record");
    for (name, reading) in [("kernel_stat", stat), ("kernel_reclaim", reclaim)] {
        out.push((
            format!("memory_pressure.{name}"),
            names.pressure_json(None, reading),
        ));
    }

    // The 1 s samples (no memcg stat tracepoints) of a Kubernetes container (named by the log
    // tree and the API) on a named node.
    let f = Fixture::new("files");
    let app = path_of(CG_WEB_APP);
    let app = app.trim_start_matches('/');
    f.write(&format!("{app}/memory.max"), "134217728\n");
    let mut m = monitor(&f, CgroupVersion::V2, false, true);
    let mut res = fixture_resolver(&f, CgroupVersion::V2);
    res.learn([(K_STATS, format!("/{app}"))]);
    let ticks = [
        (400_000, 100, stats(0, 0, 0, 1, 2)),
        (401_000, 120, stats(0, 0, 0, 4, 9)),
    ];
    let mut readings = run_ticks(
        &mut m,
        &mut res,
        &f,
        &format!("{app}/memory.current"),
        &ticks,
    );
    assert_eq!(readings.len(), 1, "one reading over 90%: {readings:?}");
    let mut reading = readings.remove(0);
    reading.cgroup_id = CG_WEB_APP;
    out.push((
        "memory_pressure.cgroup_files".into(),
        names.pressure_json(NODE, reading),
    ));

    // The same container stuck at its limit: 126 of 128 MiB, 3 MiB of it inactive cache,
    // 40,000 pages refaulted and 600 ms stalled in reclaim every second. The first sample with
    // `memory.stat` starts the count; three intervals later it is thrashing.
    let mut thrashing = Vec::new();
    for n in 0..5u64 {
        f.write(
            &format!("{app}/memory.current"),
            &format!("{}\n", 126 * MIB),
        );
        f.write(
            &format!("{app}/memory.stat"),
            &format!(
                "anon {}\nfile {}\ninactive_file {}\nactive_file 0\n\
                 workingset_refault_anon 0\nworkingset_refault_file {}\npgmajfault {}\n",
                123 * MIB,
                3 * MIB,
                3 * MIB,
                40_000 * n,
                150 * n
            ),
        );
        set_now_ms(402_000 + 1000 * n);
        thrashing.extend(m.tick(
            &[(K_STATS, stats(0, 0, 0, 4 + 900 * n, 9 + 600 * n))],
            &mut res,
        ));
    }
    let mut stuck: Vec<Reading> = thrashing
        .into_iter()
        .filter(|r| r.thrashing.is_some())
        .collect();
    assert_eq!(
        stuck.len(),
        1,
        "confirmed once, then rate-limited: {stuck:?}"
    );
    let mut reading = stuck.remove(0);
    reading.cgroup_id = CG_WEB_APP;
    out.push((
        "memory_pressure.thrashing".into(),
        names.pressure_json(NODE, reading),
    ));
    out
}

/// Every shape, named as its golden file.
fn all_shapes() -> Vec<(String, Value)> {
    let names = Names::new();
    let mut out: Vec<(String, Value)> = kill_cases()
        .into_iter()
        .map(|(name, node, lost, edit)| {
            let mut r = base_record();
            edit(&mut r);
            let (mut e, mut res) = names.enricher(node);
            let ev = e.enrich(&r, lost, Some(&mut res));
            (format!("oom_kill.{name}"), schema::kill_value(&ev, None))
        })
        .collect();
    for (n, kind) in OWNER_KINDS.iter().enumerate() {
        let (_, _, cg, _) = owned_pod(n);
        let mut r = base_record();
        place(&mut r, (7700 + n as u32, "main", cg), None, cg);
        let (mut e, mut res) = names.enricher(NODE);
        let ev = e.enrich(&r, 0, Some(&mut res));
        let name = format!("oom_kill.k8s_owner_{}", kind.to_lowercase());
        out.push((name, schema::kill_value(&ev, None)));
    }
    out.extend(process_kills(&names));
    out.extend(pressure_kills(&names));
    out.extend(domain_kills(&names));
    out.extend(pressure_events(&names));
    out.extend(sigkill_events(&names));
    out
}

/// `sigkill` records: a runtime stopping a Kubernetes container, a userspace OOM killer with
/// the target's pressure, and a SIGKILL the kernel sent itself (no sender).
fn sigkill_events(names: &Names) -> Vec<(String, Value)> {
    use crate::{
        cgroup::{
            memory::{Psi, PsiLine},
            CgroupRef,
        },
        enrich::{
            event::TaskInfo,
            sigkill::{known_sender, Cause, SigkillEvent, TargetPressure},
        },
        stream::SigkillItem,
    };
    let (mut e, mut res) = names.enricher(NODE);
    let mut task = |pid: u32, comm: &str, id: u64| TaskInfo {
        pid: Some(pid),
        tgid: Some(pid),
        comm: Some(comm.to_string()),
        cgroup: Some(CgroupRef {
            id,
            path: res.path(id),
        }),
    };
    let app = task(4242, "node", CG_WEB_APP);
    let hog = task(4343, "hog", CG_HOG);
    let runc = task(5151, "runc", CG_WORKLOAD);
    let earlyoom = task(777, "earlyoom", CG_WORKLOAD);
    let event = |target: TaskInfo, sender: Option<TaskInfo>, si_code, cause, hook: &str| {
        let known = sender
            .as_ref()
            .and_then(|s| s.comm.as_deref())
            .and_then(known_sender);
        SigkillEvent {
            ktime_ns: 104_600_000_000,
            target,
            sender,
            si_code,
            group: true,
            cause,
            known_sender: known,
            pressure: None,
            hooks: vec![hook.to_string()],
            seq: 3,
        }
    };
    let mut oomd = event(
        hog,
        Some(earlyoom),
        0,
        Cause::UserspaceOomKiller,
        "tp_btf/signal_generate",
    );
    let line = |avg10, total_us| PsiLine {
        avg10,
        avg60: avg10 / 4.0,
        avg300: avg10 / 16.0,
        total_us,
    };
    oomd.pressure = Some(TargetPressure {
        path: "/oomtrace-test-hog".into(),
        source: "kernel",
        usage_bytes: Some(62 << 20),
        limit_bytes: Some(64 << 20),
        psi: Some(Psi {
            some: line(42.5, 8_123_456),
            full: Some(line(30.25, 6_000_001)),
        }),
    });
    let cases = [
        (
            "runtime_stop",
            event(
                app.clone(),
                Some(runc),
                0,
                Cause::RuntimeStop,
                "tp_btf/signal_generate",
            ),
        ),
        ("userspace_oom_killer", oomd),
        (
            "kernel_other",
            event(
                app,
                None,
                0x80,
                Cause::KernelOther,
                "tracepoint/signal/signal_generate",
            ),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, event)| {
            let target_names = event.target.cgroup_path().and_then(|p| e.names_of(p));
            let sender_names = event
                .sender
                .as_ref()
                .and_then(|s| s.cgroup_path())
                .and_then(|p| e.peek_names(p));
            // The container's main process, read at its exec.
            let target_process = (name == "runtime_stop").then(|| ProcessIdentity {
                executable: Some("/usr/local/bin/node".into()),
                args: vec!["node".into(), "server.js".into()],
                command_line_bytes: 15,
                truncated: false,
                env: Default::default(),
                env_read: true,
                container_init: Some(true),
                source: IdentitySource::Exec,
            });
            let item = SigkillItem {
                time_unix_ns: e.wall_ns(event.ktime_ns),
                host: e.host().to_string(),
                node: e.node().map(str::to_string),
                event,
                target_names,
                sender_names,
                target_process,
            };
            (
                format!("sigkill.{name}"),
                schema::item_value(&Item::Sigkill(Box::new(item))),
            )
        })
        .collect()
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The first difference between `want` and `got`, walking objects key by key in order, with
/// the JSON path (`$.a.b[2].c`) where it is.
fn first_difference(path: &str, want: &Value, got: &Value) -> Option<String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            let mut gi = g.iter();
            for (i, (wk, wv)) in w.iter().enumerate() {
                let here = format!("{path}.{wk}");
                let Some((gk, gv)) = gi.next() else {
                    return Some(format!("{here}: missing key"));
                };
                if gk != wk {
                    return Some(if !g.contains_key(wk) {
                        format!("{here}: missing key (found {gk:?} in its place)")
                    } else if !w.contains_key(gk) {
                        format!("{path}.{gk}: extra key (before {wk:?})")
                    } else {
                        format!("{path}: key order: expected {wk:?} at position {i}, found {gk:?}")
                    });
                }
                if let Some(d) = first_difference(&here, wv, gv) {
                    return Some(d);
                }
            }
            gi.next().map(|(gk, _)| format!("{path}.{gk}: extra key"))
        }
        (Value::Array(w), Value::Array(g)) => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                if let Some(d) = first_difference(&format!("{path}[{i}]"), wv, gv) {
                    return Some(d);
                }
            }
            (w.len() != g.len())
                .then(|| format!("{path}: {} elements expected, got {}", w.len(), g.len()))
        }
        _ if kind(want) != kind(got) => Some(format!(
            "{path}: type {} expected, got {} ({got})",
            kind(want),
            kind(got)
        )),
        _ => (want != got).then(|| format!("{path}: {want} expected, got {got}")),
    }
}

#[test]
fn every_record_shape_matches_its_golden_file() {
    let shapes = all_shapes();
    let dir = golden_dir();
    let bless = std::env::var_os("OOMTRACE_BLESS").is_some_and(|v| v == "1");
    let mut seen = HashSet::new();
    let mut failures = Vec::new();
    for (name, got) in &shapes {
        assert!(
            seen.insert(format!("{name}.json")),
            "two shapes named {name}"
        );
        let path = dir.join(format!("{name}.json"));
        if bless {
            let text = serde_json::to_string_pretty(got).expect("render") + "\n";
            std::fs::create_dir_all(&dir).expect("golden dir");
            std::fs::write(&path, text).expect("write golden file");
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()));
        match want {
            Ok(want) => {
                if let Some(d) = first_difference("$", &want, got) {
                    failures.push(format!("{name}.json: {d}"));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    let files = std::fs::read_dir(&dir).expect("golden dir").flatten();
    for f in files.map(|e| e.file_name().to_string_lossy().into_owned()) {
        if f.ends_with(".json") && !seen.contains(&f) {
            if bless {
                std::fs::remove_file(dir.join(&f)).expect("remove stale golden file");
            } else {
                failures.push(format!("{f}: no shape produces it any more"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "output differs from the golden files (bless with OOMTRACE_BLESS=1 only if the change \
         is meant):\n{}",
        failures.join("\n")
    );
}

#[test]
fn first_difference_names_the_path_and_the_kind_of_difference() {
    let cases = [
        (json!({"a": 1, "b": 2}), json!({"a": 1}), "$.b: missing key"),
        (json!({"a": 1}), json!({"a": 1, "c": 3}), "$.c: extra key"),
        (
            json!({"a": 1, "b": 2}),
            json!({"a": 1, "c": 2}),
            "$.b: missing key (found \"c\" in its place)",
        ),
        (
            json!({"a": 1, "b": 2}),
            json!({"b": 2, "a": 1}),
            "$: key order: expected \"a\" at position 0, found \"b\"",
        ),
        (
            json!({"x": [1, {"y": "a"}]}),
            json!({"x": [1, {"y": "b"}]}),
            "$.x[1].y: \"a\" expected, got \"b\"",
        ),
        (
            json!({"n": 1}),
            json!({"n": 1.0}),
            "$.n: type integer expected, got float (1.0)",
        ),
        (
            json!({"n": null}),
            json!({"n": 0}),
            "$.n: type null expected, got integer (0)",
        ),
        (json!([1, 2]), json!([1]), "$: 2 elements expected, got 1"),
    ];
    for (want, got, diff) in cases {
        assert_eq!(
            first_difference("$", &want, &got).as_deref(),
            Some(diff),
            "{want} vs {got}"
        );
    }
    let v = json!({"a": [1, {"b": 2.5}], "c": null});
    assert_eq!(first_difference("$", &v, &v), None);
}

// ---- the README's schema documentation against the types -------------------------------------

/// The key paths of `v`: leaves by dotted path, `name[]` for an array of scalars and
/// `name[].key` inside an array of objects, `labels.*` for the pod's labels (user data).
fn key_paths(prefix: &str, v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            // Label names, environment variable names and a finding's evidence are data, not
            // schema keys (the README's "Why did it die?" lists each code's evidence).
            if prefix.ends_with(".labels")
                || prefix.ends_with(".process.env")
                || prefix.ends_with(".evidence")
            {
                out.insert(format!("{prefix}.*"));
                return;
            }
            for (k, child) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                key_paths(&p, child, out);
            }
        }
        Value::Array(items) => {
            let p = format!("{prefix}[]");
            if items.iter().all(|i| !i.is_object()) {
                out.insert(p);
            } else {
                for i in items {
                    key_paths(&p, i, out);
                }
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

/// Every key path the schema emits, by event, over every golden shape (the golden test keeps
/// the shapes complete: a key the types gain fails it until it is pinned).
fn emitted_keys() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, v) in all_shapes() {
        let event = v["event"].as_str().unwrap_or("?").to_string();
        key_paths("", &v, out.entry(event).or_default());
    }
    out
}

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The README's key index: the lines of the fenced block after `<!-- schema-keys -->`, each
/// `EVENT key key …`.
fn readme_key_index(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let start = text
        .find("<!-- schema-keys -->")
        .expect("the README has a <!-- schema-keys --> index");
    let block = text[start..]
        .split("```")
        .nth(1)
        .expect("a fenced block after the marker");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in block.lines().skip(1) {
        let mut words = line.split_whitespace();
        let Some(event) = words.next() else { continue };
        out.entry(event.to_string())
            .or_default()
            .extend(words.map(str::to_string));
    }
    out
}

/// The key names in the first column of the README's `| key | meaning |` tables. A name
/// without a dot after a dotted one in the same cell is relative to that one's parent
/// (`victim.total_vm_bytes`, `anon_rss_bytes`).
fn readme_table_keys(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.starts_with("| key | meaning |") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        let cell = line.split('|').nth(1).unwrap_or("");
        let mut parent = String::new();
        for (i, token) in cell.split('`').enumerate() {
            if i % 2 == 0 || token.is_empty() {
                continue;
            }
            let key = if token.contains('.') || parent.is_empty() {
                if let Some((p, _)) = token.rsplit_once('.') {
                    parent = p.to_string();
                }
                token.to_string()
            } else {
                format!("{parent}.{token}")
            };
            out.push(key);
        }
    }
    out
}

#[test]
fn readme_documents_every_key() {
    let text = readme();
    let emitted = emitted_keys();
    let index = readme_key_index(&text);
    let mut problems = Vec::new();
    for (event, keys) in &emitted {
        let documented = index.get(event).cloned().unwrap_or_default();
        for k in keys.difference(&documented) {
            problems.push(format!(
                "{event}: `{k}` is emitted but not in the README's key index"
            ));
        }
        for k in documented.difference(keys) {
            problems.push(format!(
                "{event}: `{k}` is in the README's key index but never emitted"
            ));
        }
    }
    for event in index.keys().filter(|e| !emitted.contains_key(*e)) {
        problems.push(format!(
            "the README's key index names an unknown event `{event}`"
        ));
    }
    // Every key the prose tables name is a key (or an object holding keys) of some event.
    let all: BTreeSet<&String> = emitted.values().flatten().collect();
    for k in readme_table_keys(&text) {
        let exists = all.iter().any(|e| {
            *e == &k || e.starts_with(&format!("{k}.")) || e.starts_with(&format!("{k}["))
        });
        if !exists {
            problems.push(format!(
                "the README's tables document `{k}`, which no event has"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn key_paths_flatten_arrays_and_labels() {
    let v = json!({"a": {"b": 1, "labels": {"x": "y"}}, "t": [{"o": 1}], "s": ["h"]});
    let mut out = BTreeSet::new();
    key_paths("", &v, &mut out);
    let want: BTreeSet<String> = ["a.b", "a.labels.*", "t[].o", "s[]"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(out, want);
    let cell = "| `victim.total_vm_bytes`, `anon_rss_bytes` | x |";
    assert_eq!(
        readme_table_keys(&format!("| key | meaning |\n|---|---|\n{cell}\n")),
        ["victim.total_vm_bytes", "victim.anon_rss_bytes"]
    );
}

/// Prints the key index for the README (`cargo test -p oomtrace --lib print_key_index --
/// --ignored --nocapture`).
#[test]
#[ignore = "prints the README's key index; run by hand after a schema change"]
fn print_key_index() {
    for (event, keys) in emitted_keys() {
        let mut line = event.clone();
        for k in keys {
            if line.len() + k.len() > 98 {
                println!("{line}");
                line = event.clone();
            }
            line.push(' ');
            line.push_str(&k);
        }
        println!("{line}");
    }
}
