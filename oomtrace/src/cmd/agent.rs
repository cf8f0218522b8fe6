//! `oomtrace agent`: the long-running node agent. JSON Lines to stdout and/or a rotating file,
//! Prometheus metrics with health endpoints, Kubernetes names from the kubelet's log tree; runs
//! until SIGTERM and writes every record it has before exiting.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::Context;
use log::{info, warn};
use tokio::signal::unix::{signal, SignalKind};

use crate::output::metrics::{
    ContainerLabels, KillLabels, Metrics, PressureMetrics, SigkillLabels, MAX_KILL_SERIES,
};
use crate::output::{
    http,
    rotate::RotatingFile,
    schema,
    sink::{ReopenHandle, Sink, Stdout, QUEUE_LINES},
};
use crate::{
    capture::tracer::{Tracer, TracerOptions},
    cmd::args::{HostLogArgs, KernelArgs, ProcessArgs},
    enrich::event::Action,
    enrich::kube::{ApiBase, KubeClient, KubeConfig, PodMeta, WatchOptions},
    enrich::names::Namer,
    stream::{EventStream, Item, Kill, SigkillItem},
};

#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Address for GET /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, env = "OOMTRACE_LISTEN", default_value = "0.0.0.0:9742")]
    pub listen: SocketAddr,
    /// Also append JSON Lines to this file, rotated by size (SIGHUP reopens it).
    #[arg(long, env = "OOMTRACE_OUTPUT_FILE", value_name = "PATH")]
    pub output_file: Option<PathBuf>,
    /// Rotate the output file when it would exceed this size (bytes, or with a K, M or G
    /// suffix: 512K, 100M).
    #[arg(long, default_value = "100M", value_name = "SIZE", value_parser = parse_size)]
    pub max_file_size: u64,
    /// Rotated output files to keep (`FILE.1` newest … `FILE.N` oldest; at most 100, more is
    /// clamped to 100).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_files: u32,
    /// Do not write JSON Lines to stdout (only to --output-file).
    #[arg(long)]
    pub no_stdout: bool,
    /// This node's name, for `k8s.node.name` (the DaemonSet sets it from spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    #[command(flatten)]
    pub host_logs: HostLogArgs,
    #[command(flatten)]
    pub process: ProcessArgs,
    /// The API server to watch pods on, for an agent running outside a pod (e.g. a systemd
    /// service on the node): `https://host:port` (or `http://` to a local proxy). In a pod the
    /// service account's settings are used without it.
    #[arg(long, env = "OOMTRACE_KUBE_API", value_name = "URL")]
    pub kube_api: Option<String>,
    /// Bearer token for --kube-api, re-read at each request (bound tokens rotate).
    #[arg(long, requires = "kube_api", value_name = "FILE")]
    pub kube_token_file: Option<PathBuf>,
    /// CA bundle (PEM) that signed --kube-api's certificate (re-read about once a minute).
    #[arg(long, requires = "kube_api", value_name = "FILE")]
    pub kube_ca_file: Option<PathBuf>,
    /// Post a Kubernetes Event (reason OOMKilling) on the victim's Pod. Needs in-cluster
    /// credentials allowed to create events (deploy/overlays/events).
    #[arg(long, env = "OOMTRACE_K8S_EVENTS")]
    pub k8s_events: bool,
    /// Scheduling priority (nice, -20..19) of the agent's threads. In a kill storm the node's
    /// CPUs are busy with the processes being killed; at -20 the few milliseconds of work per
    /// kill still run at once. Needs CAP_SYS_NICE; without it the priority stays as it is.
    #[arg(long, default_value_t = -20, allow_negative_numbers = true, value_name = "N",
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub nice: i32,
    #[command(flatten)]
    pub kernel: KernelArgs,
    #[command(flatten)]
    pub pin: PinArgs,
    /// Every this many seconds, check the kills written against the kernel's own count
    /// (/proc/vmstat oom_kill); a kill it counted and no record showed is logged with its
    /// cgroup and counted in oomtrace_oom_kills_unrecorded_total.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub reconcile_interval: u64,
}

/// Durable capture across restarts (`crate::capture::pin`).
#[derive(Debug, Clone, clap::Args)]
pub struct PinArgs {
    /// Pin the attached programs' links and the ring buffers here (on bpffs, mounted at
    /// /sys/fs/bpf if needed): they keep recording while no agent runs, and the next agent
    /// adopts them and writes what was queued. `oomtrace uninstall` removes them.
    #[arg(
        long,
        env = "OOMTRACE_PIN_DIR",
        default_value = crate::capture::pin::DEFAULT_PIN_DIR,
        value_name = "DIR"
    )]
    pub pin_dir: PathBuf,
    /// Pin nothing (wins over --pin-dir): the programs detach when the agent exits, and kills
    /// during a restart are not recorded.
    #[arg(long)]
    pub no_pin: bool,
}

impl PinArgs {
    /// The pin directory, unless `--no-pin`.
    pub fn dir(&self) -> Option<PathBuf> {
        (!self.no_pin).then(|| self.pin_dir.clone())
    }
}

/// `4096`, `512K`, `100M`, `1G` (binary multiples) → bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        _ => (s, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 4096, 512K, 100M, 1G)"))?;
    n.checked_mul(1 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

/// The agent's outputs, each a writer thread behind its own queue.
struct Outputs {
    sinks: Vec<Sink>,
}

impl Outputs {
    fn open(args: &AgentArgs) -> anyhow::Result<Self> {
        let mut sinks = Vec::new();
        if !args.no_stdout {
            sinks.push(Sink::spawn("stdout", QUEUE_LINES, Stdout::new())?);
        }
        if let Some(p) = &args.output_file {
            let file = RotatingFile::open(p, args.max_file_size, args.max_files)?;
            sinks.push(Sink::spawn("file", QUEUE_LINES, file)?);
        }
        Ok(Self { sinks })
    }

    fn write(&mut self, line: &str) {
        let line: Arc<str> = Arc::from(line);
        for s in &mut self.sinks {
            s.send(line.clone());
        }
    }

    fn export(&self, m: &mut Metrics) {
        for s in &self.sinks {
            m.set_dropped(s.name, s.counters.dropped.load(Ordering::Relaxed));
            m.set_output_errors(s.name, s.counters.errors.load(Ordering::Relaxed));
        }
    }

    /// Lets each writer finish its queue, waiting at most [`CLOSE_WITHIN`] for each.
    fn close(self) {
        for s in self.sinks {
            s.close(CLOSE_WITHIN);
        }
    }
}

/// How long a sink may take to write out its queue at exit (a pipe nobody reads never does).
const CLOSE_WITHIN: Duration = Duration::from_secs(3);

/// Lowers this process's `oom_score_adj` so the kernel picks it last, and says what it did.
fn protect_self() {
    const ADJ: &str = "-999";
    match std::fs::write("/proc/self/oom_score_adj", ADJ) {
        Ok(()) => info!("oom_score_adj set to {ADJ}: the OOM killer picks this agent last"),
        Err(e) => warn!(
            "oom_score_adj left as it is ({e}): lowering it needs CAP_SYS_RESOURCE; the agent \
             could itself be an OOM victim"
        ),
    }
}

/// Sets this thread's nice value; the threads it starts afterwards inherit it (Linux keeps the
/// value per thread).
fn set_priority(nice: i32) {
    // SAFETY: setpriority has no memory-safety preconditions; 0 is the calling thread.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if r == 0 {
        info!("threads run at nice {nice}: kills are written at once even when the CPUs are busy");
    } else {
        warn!(
            "nice {nice} not set ({}): raising priority needs CAP_SYS_NICE; in a kill storm \
             records may be late",
            std::io::Error::last_os_error()
        );
    }
}

/// The pressure families from the monitor: usage ratio of each Kubernetes container with a
/// limit (named through the enricher), reclaim and event totals, record counts.
fn pressure_metrics(stream: &mut EventStream) -> PressureMetrics {
    let mut out = PressureMetrics {
        records: stream.pressure_records.clone(),
        ..PressureMetrics::default()
    };
    let Some(monitor) = stream.monitor.as_ref() else {
        return out;
    };
    out.reclaims = monitor.reclaim_total();
    out.events = monitor.events_total().clone();
    out.dismissed = monitor.dismissed();
    let levels: Vec<(String, f64, Option<f64>, f64)> = monitor
        .levels()
        .filter(|l| l.limit_bytes > 0)
        .map(|l| {
            let limit = l.limit_bytes as f64;
            (
                l.path.to_string(),
                l.usage_bytes as f64 / limit,
                l.working_set_bytes.map(|ws| ws as f64 / limit),
                l.thrashing_seconds,
            )
        })
        .collect();
    for (path, usage, working_set, thrashing) in levels {
        if out.usage_ratio.len() >= MAX_KILL_SERIES {
            break;
        }
        // Every second: a cgroup without names is not a new miss each time.
        let Some(names) = stream.enricher.peek_names(&path) else {
            continue;
        };
        let Some(pod) = names.pod.as_ref() else {
            continue;
        };
        let Some(container) = pod.container.clone() else {
            continue;
        };
        let labels = ContainerLabels {
            namespace: pod.namespace.clone(),
            pod: pod.pod.clone(),
            container,
        };
        if let Some(ws) = working_set {
            out.working_set_ratio.insert(labels.clone(), ws);
        }
        if thrashing > 0.0 {
            out.thrashing_seconds.insert(labels.clone(), thrashing);
        }
        out.usage_ratio.insert(labels, usage);
    }
    out
}

fn kill_labels(kill: &Kill) -> KillLabels {
    let ev = &kill.event;
    let victim = ev.names.as_ref().and_then(|n| n.victim.as_ref());
    let pod = victim.and_then(|v| v.pod.as_ref());
    KillLabels {
        namespace: pod.map(|p| p.namespace.clone()).unwrap_or_default(),
        pod: pod.map(|p| p.pod.clone()).unwrap_or_default(),
        container: pod.and_then(|p| p.container.clone()).unwrap_or_default(),
        constraint: ev.oom.constraint.unwrap_or("").to_string(),
        scope: ev.scope.map(|s| s.as_str()).unwrap_or("").to_string(),
        reason: kill.verdict.reason().to_string(),
    }
}

fn sigkill_labels(s: &SigkillItem) -> SigkillLabels {
    let pod = s.target_names.as_ref().and_then(|n| n.pod.as_ref());
    SigkillLabels {
        namespace: pod.map(|p| p.namespace.clone()).unwrap_or_default(),
        pod: pod.map(|p| p.pod.clone()).unwrap_or_default(),
        container: pod.and_then(|p| p.container.clone()).unwrap_or_default(),
        cause: s.event.cause.as_str(),
    }
}

/// In a cluster (service-account credentials present), watches this node's pods through the
/// API server and lets `namer` use them. Off cluster it does nothing and says nothing.
fn api_namer(mut namer: Namer, args: &AgentArgs) -> anyhow::Result<(Namer, Option<KubeClient>)> {
    let client = match &args.kube_api {
        Some(url) => Ok(Some(explicit_client(url, args)?)),
        None => KubeClient::from_env(),
    };
    let kube = match client {
        Ok(c) => c,
        Err(e) => {
            warn!("Kubernetes API unusable ({e}); names come from the kubelet's log tree only");
            None
        }
    };
    if let Some(client) = &kube {
        match args.node_name.as_deref().filter(|n| !n.is_empty()) {
            Some(node) => match client.spawn_pod_watch(node, WatchOptions::default()) {
                Ok((cache, _task)) => {
                    info!("watching the pods of node {node} through the API server");
                    namer = namer.with_api(cache);
                }
                Err(e) => warn!("Kubernetes API: cannot watch pods: {e}"),
            },
            None => warn!(
                "in a cluster but --node-name (env NODE_NAME) is not set: pods are not watched"
            ),
        }
    }
    if args.k8s_events && kube.is_none() {
        warn!("--k8s-events needs in-cluster credentials: no Events will be posted");
    }
    Ok((namer, kube))
}

/// A client for `--kube-api`, with `--kube-token-file` and `--kube-ca-file`; unreadable files
/// are errors (the user asked for them).
fn explicit_client(url: &str, args: &AgentArgs) -> anyhow::Result<KubeClient> {
    let mut config =
        KubeConfig::new(ApiBase::parse(url).with_context(|| format!("--kube-api {url}"))?);
    if let Some(f) = &args.kube_token_file {
        let token = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read --kube-token-file {}", f.display()))?;
        config.token = Some(token.trim().to_string());
        config.token_file = Some(f.clone());
    }
    if let Some(f) = &args.kube_ca_file {
        config.ca_pem = Some(
            std::fs::read(f)
                .with_context(|| format!("cannot read --kube-ca-file {}", f.display()))?,
        );
        config.ca_file = Some(f.clone());
    }
    Ok(KubeClient::new(config)?)
}

/// Posts an `OOMKilling` Event on the victim's Pod (`--k8s-events`), at most one per pod per
/// [`EVENT_INTERVAL`], so an OOM loop cannot flood the API server. Capture only queues the
/// Event ([`EVENT_QUEUE`] at most); a task on the HTTP runtime posts them one by one, so a slow
/// API server costs dropped Events (counted), never a late record.
struct EventPoster {
    queue: tokio::sync::mpsc::Sender<(PodMeta, String)>,
    last: std::collections::HashMap<String, std::time::Instant>,
    dropped: u64,
}

const EVENT_INTERVAL: Duration = Duration::from_secs(30);
const EVENT_QUEUE: usize = 64;

impl EventPoster {
    /// Starts the posting task on the current runtime.
    fn spawn(client: KubeClient, node: String, shared: http::Shared) -> Self {
        let (queue, mut rx) = tokio::sync::mpsc::channel::<(PodMeta, String)>(EVENT_QUEUE);
        tokio::spawn(async move {
            while let Some((meta, message)) = rx.recv().await {
                if let Err(e) = client.post_oom_event(&meta, &message, &node).await {
                    warn!(
                        "cannot post the OOMKilling Event on pod {}/{}: {e}",
                        meta.namespace, meta.name
                    );
                    if let Ok(mut m) = shared.metrics.lock() {
                        m.count_event_failure();
                    }
                }
            }
        });
        Self {
            queue,
            last: std::collections::HashMap::new(),
            dropped: 0,
        }
    }

    fn post(&mut self, kill: &Kill) {
        let ev = &kill.event;
        let victim = ev.names.as_ref().and_then(|n| n.victim.as_ref());
        let Some(meta) = victim.and_then(|v| v.api.clone()) else {
            return;
        };
        let now = std::time::Instant::now();
        if self
            .last
            .get(&meta.uid)
            .is_some_and(|t| now.duration_since(*t) < EVENT_INTERVAL)
        {
            return;
        }
        self.last
            .retain(|_, t| now.duration_since(*t) < EVENT_INTERVAL);
        self.last.insert(meta.uid.clone(), now);
        let container = victim
            .and_then(|v| v.pod.as_ref())
            .and_then(|p| p.container.clone())
            .unwrap_or_else(|| "?".into());
        let mib = |b: Option<u64>| {
            b.map_or("?".to_string(), |b| {
                format!("{:.1} MiB", b as f64 / 1048576.0)
            })
        };
        let message = format!(
            "{} {} (pid {}) in container {container}: anon-rss {}, constraint {}, scope {}, limit {} (oomtrace incident {})",
            match ev.action {
                Some(Action::AlreadyExiting) => "OOM killer chose exiting task",
                _ => "OOM-killed",
            },
            ev.victim.task.comm.as_deref().unwrap_or("?"),
            ev.victim.task.pid.map_or("?".to_string(), |p| p.to_string()),
            mib(ev.victim.anon_rss_bytes),
            ev.oom.constraint.unwrap_or("?"),
            ev.scope.map_or("?", |s| s.as_str()),
            mib(ev.oom.memcg.as_ref().map(|m| m.limit_bytes)),
            ev.incident,
        );
        // The verdict first: the note is capped at 1 kB, and the headline is what people read.
        let message = match kill.verdict.headline() {
            Some(why) => format!("{why}. {message}"),
            None => message,
        };
        if self.queue.try_send((meta, message)).is_err() {
            self.dropped += 1;
        }
    }
}

/// What the capture thread needs to start.
struct CaptureSetup {
    tracer: TracerOptions,
    /// How often kills delivered are checked against the kernel's count.
    reconcile_every: Duration,
    namer: Namer,
    node: Option<String>,
    pressure: Option<crate::pressure::PressureSettings>,
    processes: crate::enrich::process::ProcessCache,
    sigkill: Option<crate::enrich::sigkill::SigkillScope>,
}

/// The running capture thread, seen from the agent's main task.
struct CaptureHandle {
    stop: tokio::sync::watch::Sender<bool>,
    ended: tokio::sync::oneshot::Receiver<anyhow::Result<Outputs>>,
    thread: std::thread::JoinHandle<()>,
}

/// Starts capture on its own thread with its own runtime: ring buffers, enrichment (cgroup and
/// `/proc` reads), rendering and queueing to the outputs. The HTTP endpoint and signals stay on
/// the caller's runtime, so nothing capture waits on can stall `/healthz`, and a stalled output
/// only fills its own queue. Returns once the tracer is attached (or failed to attach).
async fn spawn_capture(
    setup: CaptureSetup,
    outputs: Outputs,
    shared: http::Shared,
    poster: Option<EventPoster>,
) -> anyhow::Result<(CaptureHandle, String)> {
    let (started_tx, started) = tokio::sync::oneshot::channel::<anyhow::Result<String>>();
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            let end = capture_thread(setup, outputs, shared, poster, started_tx, stop_rx);
            let _ = ended_tx.send(end);
        })?;
    let hooks = started
        .await
        .map_err(|_| anyhow::anyhow!("the capture thread ended before attaching"))??;
    Ok((
        CaptureHandle {
            stop,
            ended,
            thread,
        },
        hooks,
    ))
}

fn capture_thread(
    setup: CaptureSetup,
    mut outputs: Outputs,
    shared: http::Shared,
    mut poster: Option<EventPoster>,
    started: tokio::sync::oneshot::Sender<anyhow::Result<String>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Outputs> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the capture thread's runtime")?;
    rt.block_on(async move {
        let tracer = match Tracer::start(&setup.tracer) {
            Ok(t) => t,
            Err(e) => {
                let _ = started.send(Err(e.into()));
                return Ok(outputs);
            }
        };
        let hooks = tracer.hooks_in_use().join(",");
        // Proof of zero loss: kills delivered vs the kernel's counters.
        let mut reconciler = crate::reconcile::Reconciler::start(Path::new("/proc"))
            .inspect_err(|e| warn!("kills are not reconciled with the kernel's counters: {e}"))
            .ok();
        let mut reconcile_every = tokio::time::interval(setup.reconcile_every);
        let mut stream = EventStream::new(
            tracer,
            setup.namer,
            setup.node,
            setup.pressure,
            setup.processes,
            setup.sigkill,
        );
        let _ = started.send(Ok(hooks));
        let mut draining = false;
        // Counters not yet exported since the last batch (they are exported at most every
        // EXPORT_EVERY, and once more after a quiet EXPORT_EVERY).
        let mut dirty = true;
        let mut last_export = std::time::Instant::now();
        loop {
            let batch = if draining {
                // Shutting down: take what is queued, without waiting for more.
                match tokio::time::timeout(Duration::from_millis(50), stream.next()).await {
                    Ok(b) => b?,
                    Err(_) => break,
                }
            } else {
                tokio::select! {
                    b = stream.next() => b?,
                    _ = stop.changed() => { draining = true; continue; }
                    _ = reconcile_every.tick(), if reconciler.is_some() => {
                        if let Some(r) = reconciler.as_mut() {
                            if let Err(e) = r.tick() {
                                warn!("{e}");
                            }
                            if let Ok(mut m) = shared.metrics.lock() {
                                m.set_unrecorded(r.unrecorded_total());
                            }
                        }
                        continue;
                    }
                    () = tokio::time::sleep(EXPORT_EVERY), if dirty => {
                        export_metrics(&mut stream, &outputs, &shared, poster.as_ref());
                        (dirty, last_export) = (false, std::time::Instant::now());
                        continue;
                    }
                }
            };
            deliver(
                batch,
                &mut outputs,
                &shared,
                poster.as_mut(),
                reconciler.as_mut(),
            );
            dirty = true;
            // The counters cost syscalls and file reads: not after every batch of a storm.
            if last_export.elapsed() >= EXPORT_EVERY {
                export_metrics(&mut stream, &outputs, &shared, poster.as_ref());
                (dirty, last_export) = (false, std::time::Instant::now());
            }
        }
        export_metrics(&mut stream, &outputs, &shared, poster.as_ref());
        let lost = stream.tracer.events_lost();
        if lost > 0 {
            warn!("{lost} records were lost: the ring buffer was full");
        }
        Ok(outputs)
    })
}

/// The kernel's counters, the enricher's totals, pressure gauges and the outputs' drops, into
/// the metrics.
fn export_metrics(
    stream: &mut EventStream,
    outputs: &Outputs,
    shared: &http::Shared,
    poster: Option<&EventPoster>,
) {
    let pressure = pressure_metrics(stream);
    let lost = stream.tracer.events_lost();
    let failures = stream.tracer.kernel_failures();
    let stat_hooks = (
        stream.tracer.stat_hooks_attached(),
        stream.tracer.stat_hooks_attached_for().as_secs_f64(),
    );
    if let Ok(mut m) = shared.metrics.lock() {
        m.set_events_lost(lost);
        m.set_kernel_failures(&failures);
        m.set_stat_hooks(stat_hooks.0, stat_hooks.1);
        let (path_misses, kubelet_misses, api_misses) = stream.enricher.name_misses();
        m.set_misses(path_misses, kubelet_misses, api_misses);
        m.set_process_misses(stream.processes.misses());
        m.pressure = pressure;
        outputs.export(&mut m);
        if let Some(p) = poster {
            m.set_dropped("k8s_events", p.dropped);
        }
    }
}

/// How often the capture thread refreshes the kernel counters and totals in the metrics (the
/// kill and sigkill counts are updated with each record).
const EXPORT_EVERY: Duration = Duration::from_millis(200);

/// Renders a batch to the outputs and counts it in the metrics.
fn deliver(
    batch: Vec<Result<Item, crate::capture::record::DecodeError>>,
    outputs: &mut Outputs,
    shared: &http::Shared,
    mut poster: Option<&mut EventPoster>,
    mut reconciler: Option<&mut crate::reconcile::Reconciler>,
) {
    for item in batch {
        let Ok(item) = item.inspect_err(|e| warn!("skipping malformed record: {e}")) else {
            if let Ok(mut m) = shared.metrics.lock() {
                m.count_malformed();
            }
            continue;
        };
        outputs.write(&schema::line(&item));
        if let Item::Sigkill(s) = &item {
            if let Ok(mut m) = shared.metrics.lock() {
                m.count_sigkill(sigkill_labels(s));
            }
        }
        let Item::Kill(kill) = item else {
            continue;
        };
        if let Some(r) = reconciler.as_deref_mut() {
            r.delivered(&kill);
        }
        if let Some(p) = poster.as_deref_mut() {
            p.post(&kill);
        }
        if let Ok(mut m) = shared.metrics.lock() {
            if kill.event.action == Some(Action::AlreadyExiting) {
                m.count_exiting();
            } else {
                m.count_kill(kill_labels(&kill));
            }
        }
    }
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    // Before any thread starts, so that every one inherits it.
    set_priority(args.nice);
    // Signals first, so a SIGTERM during start-up still ends cleanly.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let outputs = Outputs::open(&args)?;
    let reopen: Vec<_> = outputs
        .sinks
        .iter()
        .filter_map(Sink::reopen_handle)
        .collect();
    let shared = http::Shared {
        metrics: Arc::new(Mutex::new(Metrics::new(env!("CARGO_PKG_VERSION")))),
        ready: Arc::new(AtomicBool::new(false)),
    };
    if let Ok(mut m) = shared.metrics.lock() {
        outputs.export(&mut m);
    }
    tokio::spawn(http::serve(listener, shared.clone()));
    info!("serving /metrics, /healthz and /readyz on {}", args.listen);
    protect_self();

    let (namer, kube) = api_namer(args.host_logs.namer(), &args)?;
    let poster = match (args.k8s_events, kube) {
        (true, Some(client)) => Some(EventPoster::spawn(
            client,
            args.node_name.clone().unwrap_or_default(),
            shared.clone(),
        )),
        _ => None,
    };
    let setup = CaptureSetup {
        tracer: TracerOptions {
            pin: args.pin.dir(),
            ..args.kernel.tracer_options(true)
        },
        reconcile_every: Duration::from_secs(args.reconcile_interval.max(1)),
        namer,
        node: args.node_name.clone(),
        pressure: args.kernel.pressure.settings(),
        processes: args.process.cache(),
        sigkill: args.kernel.sigkill.into(),
    };
    let (mut capture, hooks) = spawn_capture(setup, outputs, shared.clone(), poster).await?;
    info!("attached: {hooks}");
    if let Ok(mut m) = shared.metrics.lock() {
        m.hooks = hooks;
    }
    shared.ready.store(true, Ordering::Relaxed);

    let ended = loop {
        tokio::select! {
            end = &mut capture.ended => break end,
            _ = sighup.recv() => reopen.iter().for_each(ReopenHandle::reopen),
            _ = sigterm.recv() => {
                info!("SIGTERM: writing what is queued, then exiting");
                let _ = capture.stop.send(true);
            }
            _ = sigint.recv() => { let _ = capture.stop.send(true); }
        }
    };
    let _ = capture.thread.join();
    drop(reopen);
    let outputs = ended.map_err(|_| anyhow::anyhow!("the capture thread panicked"))??;
    outputs.close();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("ten").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
