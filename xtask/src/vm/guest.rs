//! What runs inside the VM: the `/init` script that mounts what oomtrace needs (proc, sysfs,
//! tracefs, cgroup2 with the memory controller) and runs the steps, framing each with marker
//! lines the host reads off the serial console.

use std::fmt::Write as _;

/// Prefix of every line the init script prints for the host.
pub(super) const MARK: &str = "@@oomtrace-vm";

/// One command run in the guest.
#[derive(Debug, Clone)]
pub(super) struct GuestStep {
    pub name: String,
    pub env: Vec<(String, String)>,
    pub argv: Vec<String>,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `/init` script running `steps` in order, then powering off.
pub(super) fn init_script(steps: &[GuestStep]) -> String {
    let mut s = String::from(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root RUST_BACKTRACE=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/shm /sys/kernel/tracing /sys/fs/cgroup
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# The root is already tmpfs; no mount on /tmp, which could hide a build tree under it.
mkdir -p /tmp && chmod 1777 /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo +memory > /sys/fs/cgroup/cgroup.subtree_control
hostname oomtrace-vm
# Loopback, for the agent's HTTP endpoint (tests/restart.rs reads /readyz and /metrics).
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
cd /tmp
"#,
    );
    let _ = writeln!(
        s,
        "echo \"{MARK} boot $(uname -r) $(grep MemTotal /proc/meminfo)\""
    );
    for step in steps {
        let _ = writeln!(s, "echo \"{MARK} begin {}\"", step.name);
        let mut cmd = String::from("env");
        for (k, v) in &step.env {
            let _ = write!(cmd, " {k}={}", quote(v));
        }
        for a in &step.argv {
            let _ = write!(cmd, " {}", quote(a));
        }
        let _ = writeln!(s, "{cmd} </dev/null 2>&1");
        let _ = writeln!(s, "echo \"{MARK} end {} rc=$?\"", step.name);
    }
    let _ = writeln!(s, "echo \"{MARK} done\"");
    s.push_str("poweroff -f\n");
    s
}

/// A marker line the guest printed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Marker<'a> {
    Boot(&'a str),
    Begin(&'a str),
    End(&'a str, i32),
    Done,
}

pub(super) fn parse_marker(line: &str) -> Option<Marker<'_>> {
    let rest = line.trim().strip_prefix(MARK)?.trim_start();
    let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    match word {
        "boot" => Some(Marker::Boot(rest)),
        "begin" => Some(Marker::Begin(rest)),
        "end" => {
            let (name, rc) = rest.rsplit_once(" rc=")?;
            Some(Marker::End(name, rc.trim().parse().ok()?))
        }
        "done" => Some(Marker::Done),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_framed_and_quoted() {
        let s = init_script(&[GuestStep {
            name: "shapes".into(),
            env: vec![("A".into(), "x y".into())],
            argv: vec!["/tests/it's".into(), "--flag".into()],
        }]);
        assert!(s.contains("echo \"@@oomtrace-vm begin shapes\"\n"));
        assert!(s.contains("env A='x y' '/tests/it'\\''s' '--flag' </dev/null 2>&1\n"));
        assert!(s.contains("echo \"@@oomtrace-vm end shapes rc=$?\"\n"));
    }

    #[test]
    fn markers_parse() {
        assert_eq!(
            parse_marker("@@oomtrace-vm end shapes-auto rc=101"),
            Some(Marker::End("shapes-auto", 101))
        );
        assert_eq!(
            parse_marker("@@oomtrace-vm begin check"),
            Some(Marker::Begin("check"))
        );
        assert_eq!(parse_marker("@@oomtrace-vm done"), Some(Marker::Done));
        assert_eq!(parse_marker("test result: ok"), None);
    }
}
