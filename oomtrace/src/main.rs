use clap::{Parser, Subcommand};
use log::LevelFilter;
use oomtrace::{
    cmd::{agent, args, check, explain, tail, uninstall},
    demo::hog,
    logging,
};

/// Records every Linux OOM kill at the moment it happens: the victim, the trigger, the kernel's
/// constraint and the cgroup whose limit was hit.
#[derive(Debug, Parser)]
#[command(name = "oomtrace", version)]
struct Cli {
    /// More detail on stderr (-v: debug, plus the eBPF programs' own warnings: failed kernel
    /// reads, truncated cgroup paths, a full ring buffer). By default oomtrace logs which hook
    /// each probe uses and why it skipped the others.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Live OOM kills on this node, as a table or JSON Lines.
    Tail(tail::TailArgs),
    /// The node agent: JSON Lines to stdout and/or a rotating file, Prometheus metrics and
    /// health endpoints, Kubernetes names; runs until SIGTERM.
    Agent(agent::AgentArgs),
    /// What this kernel allows and which hook each probe will use (exit 1 when no OOM hook can
    /// attach).
    Check(args::KernelArgs),
    /// Why each OOM kill happened: saved JSON Lines records (a file, or `kubectl logs` piped
    /// in) as short reports: what died, which budget, who held it, the verdict, the sizing.
    Explain(explain::ExplainArgs),
    /// Detach and remove what an agent left pinned in bpffs (its programs keep recording
    /// kills across agent restarts until then).
    Uninstall(uninstall::UninstallArgs),
    /// A disposable memory hog for demos and tests (run it only inside a limited cgroup).
    #[command(hide = true)]
    Hog(args::HogArgs),
}

/// glibc malloc settings for a small, steady footprint (see the README's memory figures).
/// Blocks of 128 KiB and more get their own mappings, returned to the kernel when freed: glibc
/// otherwise raises that threshold to the largest block freed so far (start-up frees a 5 MB
/// BTF file and aya's multi-MB type tables), and the big blocks after it stay in the heap,
/// resident, after they are freed. And one arena for all threads: a few threads, none
/// allocating in bulk, do not need one heap each (with its own free pages) for speed.
fn tune_allocator() {
    // SAFETY: mallopt only changes malloc's parameters; called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() {
    tune_allocator();
    let cli = Cli::parse();
    logging::init(match cli.verbose {
        0 => LevelFilter::Info,
        _ => LevelFilter::Debug,
    });
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oomtrace: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let _entered = rt.enter();
    let result = match cli.command {
        Command::Tail(args) => rt.block_on(tail::run(args)),
        Command::Agent(args) => rt.block_on(agent::run(args)),
        Command::Check(args) => match check::run(&args, &mut std::io::stdout()) {
            Ok(true) => Ok(()),
            Ok(false) => std::process::exit(1),
            Err(e) => Err(e),
        },
        Command::Explain(args) => explain::run(&args),
        Command::Uninstall(args) => uninstall::run(&args, &mut std::io::stdout()),
        Command::Hog(args) => hog::run(&args.options()),
    };
    if let Err(e) = result {
        eprintln!("oomtrace: {e:#}");
        std::process::exit(1);
    }
}
