//! Which managed runtime a process is, and the heap cap its flags and environment give it:
//! Node.js `--max-old-space-size` (flag or `NODE_OPTIONS`), the JVM's `-Xmx`, `-XX:MaxHeapSize`
//! and `-XX:MaxRAMPercentage` (flags, `JAVA_TOOL_OPTIONS`, `JDK_JAVA_OPTIONS`, `_JAVA_OPTIONS`),
//! Go's `GOMEMLIMIT`.
use super::evidence::ProcessFacts;

const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Node,
    Jvm,
    Go,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Node => "node",
            Runtime::Jvm => "jvm",
            Runtime::Go => "go",
        }
    }
}

/// The heap cap a runtime was given.
#[derive(Debug, Clone, PartialEq)]
pub struct HeapCap {
    pub runtime: Runtime,
    /// The cap in bytes; for `MaxRAMPercentage`, the percentage of the limit (needs the limit).
    pub cap: CapValue,
    /// The setting as written, e.g. `--max-old-space-size=512`.
    pub setting: String,
    /// Where it came from: `command line` or the environment variable's name.
    pub source: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CapValue {
    Bytes(u64),
    PercentOfLimit(f64),
}

impl HeapCap {
    /// The cap in bytes for a cgroup limit.
    pub fn bytes(&self, limit: u64) -> u64 {
        match self.cap {
            CapValue::Bytes(b) => b,
            CapValue::PercentOfLimit(p) => (limit as f64 * p / 100.0) as u64,
        }
    }
}

/// What the process is and how its heap is capped (`cap` absent: the runtime's default).
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeHeap {
    pub runtime: Runtime,
    pub cap: Option<HeapCap>,
}

fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

fn is_program(p: &ProcessFacts, comm: Option<&str>, names: &[&str]) -> bool {
    let exe = p.executable.as_deref().map(basename);
    let arg0 = p.args.first().map(|a| basename(a));
    [exe, arg0, comm]
        .into_iter()
        .flatten()
        .any(|n| names.contains(&n))
}

/// The runtime of a process and its heap cap, if it is one of the runtimes oomtrace knows.
pub fn detect(p: &ProcessFacts, comm: Option<&str>) -> Option<RuntimeHeap> {
    if is_program(p, comm, &["node", "nodejs"]) {
        return Some(RuntimeHeap {
            runtime: Runtime::Node,
            cap: node_cap(p),
        });
    }
    if is_program(p, comm, &["java"]) {
        return Some(RuntimeHeap {
            runtime: Runtime::Jvm,
            cap: jvm_cap(p),
        });
    }
    if p.env.contains_key("GOMEMLIMIT") || p.env.contains_key("GOGC") {
        return Some(RuntimeHeap {
            runtime: Runtime::Go,
            cap: go_cap(p),
        });
    }
    None
}

const NODE_FLAGS: [&str; 2] = ["--max-old-space-size", "--max_old_space_size"];

/// `--max-old-space-size=N` or `--max-old-space-size N` (MiB) in `tokens`, last one winning.
fn node_flag<'a>(tokens: impl Iterator<Item = &'a str>) -> Option<(u64, String)> {
    let mut found = None;
    let mut tokens = tokens.peekable();
    while let Some(t) = tokens.next() {
        for flag in NODE_FLAGS {
            if let Some(v) = t.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
                if let Ok(mb) = v.parse::<u64>() {
                    found = Some((mb * MIB, t.to_string()));
                }
            } else if t == flag {
                if let Some(v) = tokens.next_if(|v| v.parse::<u64>().is_ok()) {
                    found = v
                        .parse::<u64>()
                        .ok()
                        .map(|mb| (mb * MIB, format!("{t} {v}")));
                }
            }
        }
    }
    found
}

/// Node's options: those before the script (the first argument that is not an option).
fn node_options(args: &[String]) -> impl Iterator<Item = &str> {
    let mut value_next = false;
    args.iter()
        .skip(1)
        .map(String::as_str)
        .take_while(move |a| {
            let keep = value_next || a.starts_with('-');
            value_next = NODE_FLAGS.contains(a)
                || matches!(
                    *a,
                    "-r" | "--require"
                        | "--import"
                        | "--loader"
                        | "--title"
                        | "-C"
                        | "--conditions"
                );
            keep
        })
}

/// Node reads `NODE_OPTIONS` first; flags on the command line take precedence.
fn node_cap(p: &ProcessFacts) -> Option<HeapCap> {
    let cap = |(bytes, setting), source| HeapCap {
        runtime: Runtime::Node,
        cap: CapValue::Bytes(bytes),
        setting,
        source,
    };
    if let Some(found) = node_flag(node_options(&p.args)) {
        return Some(cap(found, "command line"));
    }
    let env = p.env.get("NODE_OPTIONS")?;
    node_flag(env.split_whitespace()).map(|f| cap(f, "NODE_OPTIONS"))
}

/// A JVM size: digits with an optional k/m/g/t suffix (any case).
pub fn jvm_size(s: &str) -> Option<u64> {
    let (digits, mult) = match s.chars().last()?.to_ascii_lowercase() {
        'k' => (&s[..s.len() - 1], 1 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        't' => (&s[..s.len() - 1], 1u64 << 40),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// The JVM's options: `JAVA_TOOL_OPTIONS`, `JDK_JAVA_OPTIONS` (the launcher prepends it to the
/// command line), the command line up to the main class or `-jar`, then `_JAVA_OPTIONS`; for
/// each setting the last one read wins, and an explicit maximum beats a percentage.
fn jvm_cap(p: &ProcessFacts) -> Option<HeapCap> {
    let mut explicit: Option<HeapCap> = None;
    let mut percent: Option<HeapCap> = None;
    let mut scan = |tokens: Vec<&str>, source: &'static str| {
        for t in tokens {
            let size = t
                .strip_prefix("-Xmx")
                .or_else(|| t.strip_prefix("-XX:MaxHeapSize="))
                .and_then(jvm_size);
            if let Some(b) = size {
                explicit = Some(HeapCap {
                    runtime: Runtime::Jvm,
                    cap: CapValue::Bytes(b),
                    setting: t.to_string(),
                    source,
                });
            } else if let Some(pc) = t
                .strip_prefix("-XX:MaxRAMPercentage=")
                .and_then(|v| v.parse::<f64>().ok())
            {
                percent = Some(HeapCap {
                    runtime: Runtime::Jvm,
                    cap: CapValue::PercentOfLimit(pc),
                    setting: t.to_string(),
                    source,
                });
            }
        }
    };
    for var in ["JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS"] {
        if let Some(v) = p.env.get(var) {
            scan(v.split_whitespace().collect(), var);
        }
    }
    let launcher: Vec<&str> = p
        .args
        .iter()
        .skip(1)
        .map(String::as_str)
        .take_while(|a| a.starts_with('-') && *a != "-jar")
        .collect();
    scan(launcher, "command line");
    if let Some(v) = p.env.get("_JAVA_OPTIONS") {
        scan(v.split_whitespace().collect(), "_JAVA_OPTIONS");
    }
    explicit.or(percent)
}

/// `GOMEMLIMIT`: bytes with an optional B, KiB, MiB, GiB or TiB suffix; `off` is no limit.
pub fn go_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let units = [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ];
    let (digits, mult) = units
        .iter()
        .find_map(|(u, m)| s.strip_suffix(u).map(|d| (d, *m)))
        .unwrap_or((s, 1));
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

fn go_cap(p: &ProcessFacts) -> Option<HeapCap> {
    let v = p.env.get("GOMEMLIMIT")?;
    Some(HeapCap {
        runtime: Runtime::Go,
        cap: CapValue::Bytes(go_size(v)?),
        setting: format!("GOMEMLIMIT={v}"),
        source: "GOMEMLIMIT",
    })
}

/// V8's default old-space cap under a memory limit, as Node.js 20+ sizes it (a quarter of the
/// memory it sees, the cgroup limit included, and not less than 256 MiB on 64-bit; measured with
/// Node 20 in a 64 MiB cgroup: 259 MiB). Older Node versions size it from the host's RAM, larger.
pub fn node_default_cap(limit: u64) -> u64 {
    (limit / 4).max(256 * MIB)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn facts(args: &[&str], env: &[(&str, &str)]) -> ProcessFacts {
        ProcessFacts {
            executable: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            env_read: true,
            container_init: None,
        }
    }

    fn bytes(h: Option<RuntimeHeap>) -> Option<(Runtime, u64, String, &'static str)> {
        let h = h?;
        let c = h.cap?;
        Some((h.runtime, c.bytes(1 << 30), c.setting, c.source))
    }

    #[test]
    fn node_flag_beats_node_options_and_script_args_are_not_flags() {
        let p = facts(
            &[
                "/usr/bin/node",
                "--max-old-space-size=512",
                "app.js",
                "--max-old-space-size=9",
            ],
            &[("NODE_OPTIONS", "--max-old-space-size=64")],
        );
        assert_eq!(
            bytes(detect(&p, None)),
            Some((
                Runtime::Node,
                512 * MIB,
                "--max-old-space-size=512".into(),
                "command line"
            ))
        );
        let p = facts(
            &["node", "app.js"],
            &[("NODE_OPTIONS", "--trace-gc --max_old_space_size=96")],
        );
        assert_eq!(
            bytes(detect(&p, None)),
            Some((
                Runtime::Node,
                96 * MIB,
                "--max_old_space_size=96".into(),
                "NODE_OPTIONS"
            ))
        );
        let p = facts(
            &["node", "-r", "x", "--max-old-space-size", "200", "a.js"],
            &[],
        );
        assert_eq!(bytes(detect(&p, None)).map(|b| b.1), Some(200 * MIB));
        let p = facts(&["node", "a.js"], &[]);
        assert_eq!(
            detect(&p, None),
            Some(RuntimeHeap {
                runtime: Runtime::Node,
                cap: None
            })
        );
    }

    #[test]
    fn jvm_last_setting_wins_and_explicit_beats_percentage() {
        let p = facts(
            &[
                "/opt/java/bin/java",
                "-Xmx256m",
                "-jar",
                "app.jar",
                "-Xmx1g",
            ],
            &[
                ("JAVA_TOOL_OPTIONS", "-Xmx64m"),
                ("JDK_JAVA_OPTIONS", "-XX:MaxRAMPercentage=90"),
            ],
        );
        assert_eq!(
            bytes(detect(&p, None)),
            Some((Runtime::Jvm, 256 * MIB, "-Xmx256m".into(), "command line"))
        );
        let p = facts(
            &["java", "-XX:MaxRAMPercentage=80.0", "Main"],
            &[("_JAVA_OPTIONS", "-XX:MaxRAMPercentage=95")],
        );
        assert_eq!(
            bytes(detect(&p, None)),
            Some((
                Runtime::Jvm,
                (f64::from(1 << 30) * 0.95) as u64,
                "-XX:MaxRAMPercentage=95".into(),
                "_JAVA_OPTIONS"
            ))
        );
        assert_eq!(jvm_size("2G"), Some(2 << 30));
        assert_eq!(jvm_size("1024k"), Some(1 << 20));
        assert_eq!(jvm_size("x"), None);
    }

    #[test]
    fn go_memlimit_units() {
        assert_eq!(go_size("512MiB"), Some(512 * MIB));
        assert_eq!(go_size("1073741824"), Some(1 << 30));
        assert_eq!(go_size("off"), None);
        let p = facts(&["/app/server"], &[("GOMEMLIMIT", "2GiB")]);
        assert_eq!(
            bytes(detect(&p, None)),
            Some((Runtime::Go, 2 << 30, "GOMEMLIMIT=2GiB".into(), "GOMEMLIMIT"))
        );
        let p = facts(&["/app/server"], &[("GOGC", "50")]);
        assert_eq!(
            detect(&p, None).map(|h| (h.runtime, h.cap)),
            Some((Runtime::Go, None))
        );
        assert_eq!(detect(&facts(&["/bin/sh"], &[]), Some("sh")), None);
    }
}
