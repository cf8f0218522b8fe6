//! `oomtrace check`: what this kernel allows and which hook each probe uses.
use std::{io::Write, path::Path};

use oomtrace_common::ABSENT;

use crate::{
    capture::tracefs,
    capture::tracer::{self, Tracer, DEFAULT_BTF},
    cgroup::{CgroupVersion, MemoryHierarchy},
    cmd::args::KernelArgs,
};

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// Prints the report; returns whether the victim probe can attach (exit status 0) or not (1).
pub fn run(args: &KernelArgs, out: &mut impl Write) -> anyhow::Result<bool> {
    writeln!(out, "kernel:   {}", kernel_release())?;
    let btf_path = args.btf.clone().unwrap_or_else(|| DEFAULT_BTF.into());
    let btf_state = if Path::new(&btf_path).is_file() {
        "present"
    } else {
        "MISSING (pass --btf FILE)"
    };
    writeln!(out, "btf:      {} ({btf_state})", btf_path.display())?;
    match tracefs::root() {
        Ok(root) => writeln!(out, "tracefs:  {}", root.display())?,
        Err(e) => writeln!(out, "tracefs:  unavailable: {e}")?,
    }
    match MemoryHierarchy::detect() {
        Ok(h) => writeln!(
            out,
            "cgroup:   {} at {}",
            match h.version {
                CgroupVersion::V1 => "v1 memory",
                CgroupVersion::V2 => "v2 (memory controller)",
            },
            h.root.display()
        )?,
        Err(e) => writeln!(out, "cgroup:   {e}")?,
    }
    if !tracer::is_root() {
        writeln!(
            out,
            "probes:   not checked: {}",
            tracer::TracerError::NotRoot
        )?;
        return Ok(false);
    }
    let t = Tracer::start(&args.tracer_options(false))?;
    let unpinnable: Vec<String> = t
        .outcomes
        .iter()
        .filter_map(|o| o.chosen)
        .filter(|h| !crate::capture::pin::hook_pinnable(h))
        .map(|h| h.name())
        .collect();
    writeln!(
        out,
        "pinning:  {}; {}",
        crate::capture::pin::describe(std::path::Path::new(crate::capture::pin::DEFAULT_PIN_DIR)),
        if unpinnable.is_empty() {
            "every hook in use can be pinned".to_string()
        } else {
            format!("cannot pin {} (agent runs unpinned)", unpinnable.join(", "))
        }
    )?;
    let l = &t.layout;
    let rss = if l.mm_rss_value == 0 {
        "atomic_long_t counters (< 6.2)"
    } else {
        "percpu_counter (>= 6.2)"
    };
    writeln!(
        out,
        "layout:   mm rss_stat: {rss}; classic mark_victim fields: {}",
        if l.tp_total_vm == ABSENT {
            "pid only"
        } else {
            "full"
        }
    )?;
    let mut victim_ok = false;
    for o in &t.outcomes {
        match o.chosen {
            Some(h) => writeln!(out, "probe {:<18} {h}  ({})", o.probe.name, o.probe.purpose)?,
            None => writeln!(out, "probe {:<18} NONE: {}", o.probe.name, o.probe.without)?,
        }
        for (h, why) in &o.skipped {
            writeln!(out, "  skipped {h}: {why}")?;
        }
        if o.probe.required && o.chosen.is_some() {
            victim_ok = true;
        }
    }
    if args.pressure.no_pressure {
        writeln!(out, "pressure: off (--no-pressure)")?;
    } else {
        let s = crate::stream::pressure_sources(&t);
        writeln!(out, "pressure: sources {}", s.names().join(", "))?;
        writeln!(
            out,
            "  charge deltas and near-limit detection: {}",
            if s.memcg_stat {
                "in the kernel (memcg stat tracepoints)"
            } else if args.pressure.no_stat_hooks {
                "stat tracepoints off (--no-stat-hooks): near-limit from reclaim and 1 s cgroup-file samples"
            } else {
                "no memcg stat tracepoints (6.13+): near-limit from reclaim and 1 s cgroup-file samples"
            }
        )?;
        writeln!(
            out,
            "  reclaim counts and stalls: {}",
            if s.reclaim {
                "memcg reclaim tracepoints"
            } else {
                "unavailable"
            }
        )?;
    }
    write_maps(out)?;
    // Counted from load, so a check reports its own (just loaded) programs: all 0 unless a
    // kill raced it. A running agent exports its own counts in /metrics.
    writeln!(
        out,
        "failures: kernel-side failures by reason, since this check loaded the programs:"
    )?;
    for (reason, n) in t.kernel_failures() {
        writeln!(out, "  {:<20} {n}", reason.name())?;
    }
    Ok(victim_ok)
}

/// The eBPF maps this check loaded and the kernel memory each takes (`memlock` of
/// /proc/self/fdinfo): the same maps, sized the same way, as an agent on this node.
fn write_maps(out: &mut impl Write) -> anyhow::Result<()> {
    let maps = match crate::capture::map_memory::loaded() {
        Ok(m) => m,
        Err(e) => {
            writeln!(out, "maps:     unavailable: /proc/self/fdinfo: {e}")?;
            return Ok(());
        }
    };
    let total: u64 = maps.iter().map(|m| m.memlock).sum();
    writeln!(
        out,
        "maps:     {} eBPF maps, {total} bytes ({:.1} MiB) of kernel memory (memlock), for {} possible CPUs:",
        maps.len(),
        total as f64 / f64::from(1 << 20),
        crate::capture::tracer::possible_cpus()
    )?;
    for m in &maps {
        writeln!(
            out,
            "  map {:<16} {:>10} bytes  ({} entries, type {})",
            m.name, m.memlock, m.max_entries, m.map_type
        )?;
    }
    Ok(())
}
