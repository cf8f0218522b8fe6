//! Strings from outside (comm, cgroup and Kubernetes names, command lines) made safe for a
//! terminal: every control or format character is written as a visible escape, so a record is
//! always one row and no escape sequence reaches the operator's terminal.
//!
//! Escaped: C0 controls (`\n`, `\r`, `\t`, `\e`, else `\xNN`), DEL (`\x7f`), C1 controls
//! (`\u{85}`), and the invisible format characters that reorder or hide text: bidi embeddings,
//! overrides and isolates, marks, zero-width characters, line and paragraph separators and the
//! byte-order mark (`\u{202e}`). A backslash is left as it is: systemd's cgroup names carry
//! `\x2d` escapes of their own, and JSON (`-o json`) is the exact form.
use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is written as an escape.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'                      // Arabic letter mark
            | '\u{200b}'..='\u{200f}'       // zero-width space/joiners, LRM, RLM
            | '\u{2028}'..='\u{202e}'       // line/paragraph separators, bidi embeddings/overrides
            | '\u{2060}'..='\u{2064}'       // word joiner, invisible operators
            | '\u{2066}'..='\u{206f}'       // bidi isolates, deprecated format characters
            | '\u{feff}'                    // byte-order mark / zero-width no-break space
            | '\u{fff9}'..='\u{fffb}' // interlinear annotation
        )
}

/// `s` with every character of [`needs_escape`] written as a visible escape; borrowed when
/// nothing needs one.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x1b' => out.push_str("\\e"),
            c if u32::from(c) < 0x80 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Like [`escape`] for an optional string, `-` when absent.
pub fn escape_or_dash(s: Option<&str>) -> Cow<'_, str> {
    s.map_or(Cow::Borrowed("-"), escape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in [
            "bash",
            "/system.slice/x.service",
            "system-systemd\\x2dfsck.slice",
            "π-ü",
            "",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(b) if b == s), "{s}");
        }
    }

    #[test]
    fn controls_are_visible_escapes() {
        assert_eq!(escape("a\x1b[31mb\nc"), "a\\e[31mb\\nc");
        assert_eq!(escape("\r\t\0\x07\x7f"), "\\r\\t\\x00\\x07\\x7f");
        assert_eq!(escape("x\u{85}y\u{9b}z"), "x\\u{85}y\\u{9b}z");
        assert_eq!(escape("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
        assert_eq!(
            escape("a\u{2028}b\u{2069}\u{feff}"),
            "a\\u{2028}b\\u{2069}\\u{feff}"
        );
        assert_eq!(escape_or_dash(None), "-");
    }

    #[test]
    fn escaped_text_has_no_control_or_format_character() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let out = escape(&all);
        assert!(!out.chars().any(needs_escape));
        // Every character either stays or becomes an escape: nothing is dropped.
        let kept = all.chars().filter(|c| !needs_escape(*c)).count();
        let escaped = all.chars().filter(|c| needs_escape(*c)).count();
        assert_eq!(escaped, 32 + 1 + 32 + 1 + 5 + 7 + 5 + 10);
        // One backslash per escape, plus the input's own.
        assert_eq!(out.chars().filter(|c| *c == '\\').count(), escaped + 1);
        assert!(kept > 0);
    }
}
