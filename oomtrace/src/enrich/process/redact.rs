//! Blanking secret values in a command line (and in option strings such as `JAVA_TOOL_OPTIONS`)
//! before they are kept anywhere: a flag whose name matches the regex keeps its name and loses
//! its value to `***`.
use std::fmt;

/// What a redacted value becomes.
pub const REDACTED: &str = "***";

/// Flag names whose values are blanked: like password, secret, token, key or credential.
pub const DEFAULT_PATTERN: &str = r"(?i)passw|passphrase|pass\b|secret|token|key|credential";

/// A pattern that is not a regex; its message is one line (the regex crate's spans lines).
#[derive(Debug, thiserror::Error)]
#[error("not a valid regular expression: {}", last_line(.0))]
pub struct RedactError(#[from] regex::Error);

/// The regex crate's message ends with what is wrong (`error: unclosed group`) after lines that
/// point into the pattern.
fn last_line(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    last.trim().trim_start_matches("error: ").to_string()
}

/// Blanks the values of flags whose names match a regex.
///
/// The regex is searched (unanchored) in the flag's name without its leading dashes, or without
/// `-D` for a Java system property: `password` for `--password=x`, `--password x` and
/// `-password=x`, `javax.net.ssl.keyStorePassword` for `-Djavax.net.ssl.keyStorePassword=x`, and
/// `DB_TOKEN` for a bare `DB_TOKEN=x`. `--name value` blanks the next argument unless it starts
/// with `--` (another long flag).
#[derive(Clone)]
pub struct Redactor(regex::Regex);

impl Redactor {
    pub fn new(pattern: &str) -> Result<Self, RedactError> {
        Ok(Self(regex::Regex::new(pattern)?))
    }

    /// Blanks secret values in an argument vector, in place.
    pub fn args(&self, args: &mut [String]) {
        let mut value_next = false;
        for arg in args.iter_mut() {
            if std::mem::take(&mut value_next) && !arg.starts_with("--") {
                *arg = REDACTED.to_string();
                continue;
            }
            match flag(arg) {
                Some(Flag { name, value_at }) if self.0.is_match(name) => match value_at {
                    Some(at) if at < arg.len() => arg.replace_range(at.., REDACTED),
                    Some(_) => {}
                    None => value_next = true,
                },
                _ => {}
            }
        }
    }

    /// Blanks secret values in an option string (`NODE_OPTIONS`, `JAVA_TOOL_OPTIONS`): split
    /// into words at whitespace outside quotes, redacted as arguments, joined by single spaces.
    /// Values without a secret come back exactly as given.
    pub fn options(&self, value: &str) -> String {
        let words = split_words(value);
        let mut redacted = words.clone();
        self.args(&mut redacted);
        if redacted == words {
            value.to_string()
        } else {
            redacted.join(" ")
        }
    }
}

impl Default for Redactor {
    fn default() -> Self {
        Self(regex::Regex::new(DEFAULT_PATTERN).expect("the default pattern compiles (tested)"))
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Redactor").field(&self.0.as_str()).finish()
    }
}

/// A flag's name, and where its value starts when it is in the same word (after `=`).
struct Flag<'a> {
    name: &'a str,
    value_at: Option<usize>,
}

fn flag(arg: &str) -> Option<Flag<'_>> {
    let eq = arg.find('=');
    if let (Some(rest), Some(eq)) = (arg.strip_prefix("-D"), eq) {
        if eq > 2 {
            return Some(Flag {
                name: &rest[..eq - 2],
                value_at: Some(eq + 1),
            });
        }
    }
    if arg.starts_with('-') {
        let name_start = arg.len() - arg.trim_start_matches('-').len();
        return match eq {
            Some(eq) => Some(Flag {
                name: &arg[name_start..eq],
                value_at: Some(eq + 1),
            }),
            None if name_start < arg.len() => Some(Flag {
                name: &arg[name_start..],
                value_at: None,
            }),
            None => None,
        };
    }
    // `NAME=value` (make variables, `env` assignments): only identifier-like names, so that
    // URLs and expressions stay whole.
    let eq = eq?;
    let name = &arg[..eq];
    let identifier = name
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    (identifier && !name.is_empty()).then_some(Flag {
        name,
        value_at: Some(eq + 1),
    })
}

/// Words of an option string, split at whitespace outside single or double quotes (the quotes
/// stay in the words).
fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    for c in s.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                word.push(c);
            }
            (Some(q), _) if c == q => {
                quote = None;
                word.push(c);
            }
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            _ => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Keeps the longest prefix of `args` whose space-joined length is at most `max` bytes (the
/// last argument cut at a character boundary when that keeps more); returns whether anything
/// was left out.
pub(super) fn truncate_joined(args: &mut Vec<String>, max: usize) -> bool {
    let mut len = 0;
    for i in 0..args.len() {
        let sep = usize::from(i > 0);
        let want = sep + args[i].len();
        if len + want <= max {
            len += want;
            continue;
        }
        let room = max.saturating_sub(len + sep);
        let mut cut = room.min(args[i].len());
        while !args[i].is_char_boundary(cut) {
            cut -= 1;
        }
        args.truncate(i + 1);
        if cut == 0 {
            args.pop();
        } else {
            args[i].truncate(cut);
        }
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(r: &Redactor, args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        r.args(&mut v);
        v
    }

    #[test]
    fn default_pattern_blanks_secret_flags_in_every_form() {
        let r = Redactor::default();
        assert_eq!(
            redacted(
                &r,
                &[
                    "/usr/bin/node",
                    "--password",
                    "hunter2",
                    "--api-key=abc123",
                    "-Djavax.net.ssl.keyStorePassword=changeit",
                    "--max-old-space-size=4096",
                    "--token",
                    "--verbose",
                    "DB_PASSWORD=pw",
                    "-client_secret=s",
                    "--db-pass",
                    "-starts-with-dash",
                    "--Credentials-File=/etc/creds",
                    "server.js",
                ]
            ),
            [
                "/usr/bin/node",
                "--password",
                "***",
                "--api-key=***",
                "-Djavax.net.ssl.keyStorePassword=***",
                "--max-old-space-size=4096",
                "--token",
                "--verbose",
                "DB_PASSWORD=***",
                "-client_secret=***",
                "--db-pass",
                "***",
                "--Credentials-File=***",
                "server.js",
            ]
        );
    }

    #[test]
    fn memory_flags_and_plain_words_are_kept() {
        let r = Redactor::default();
        let args = [
            "java",
            "-Xmx512m",
            "-XX:MaxRAMPercentage=75.0",
            "-Dfile.encoding=UTF-8",
            "--passes",
            "3",
            "https://example.com/?a=b",
            "GOMEMLIMIT=1GiB",
            "--password=",
            "--token",
        ];
        assert_eq!(redacted(&r, &args), args);
    }

    #[test]
    fn a_custom_pattern_is_matched_against_the_bare_name() {
        let r = Redactor::new("^(user|db)$").expect("valid");
        assert_eq!(
            redacted(
                &r,
                &["-Duser=alice", "--db", "prod", "--dbx", "y", "user=bob"]
            ),
            ["-Duser=***", "--db", "***", "--dbx", "y", "user=***"]
        );
        let err = Redactor::new("(unclosed").expect_err("a bad pattern");
        assert_eq!(
            err.to_string(),
            "not a valid regular expression: unclosed group"
        );
    }

    #[test]
    fn option_strings_keep_quoted_words_whole() {
        let r = Redactor::default();
        assert_eq!(
            r.options("  -Xmx1g -Djavax.net.ssl.trustStorePassword=\"a b\"   -Dx='c d' "),
            "-Xmx1g -Djavax.net.ssl.trustStorePassword=*** -Dx='c d'"
        );
        assert_eq!(
            r.options("--max-old-space-size=4096 --secret s"),
            "--max-old-space-size=4096 --secret ***"
        );
        assert_eq!(r.options("4GiB"), "4GiB");
        assert_eq!(
            r.options(" -Xmx1g  -Xss1m"),
            " -Xmx1g  -Xss1m",
            "untouched when clean"
        );
    }

    #[test]
    fn truncation_keeps_whole_words_then_a_cut_one() {
        let mut v: Vec<String> = ["abc", "defg", "hi"].map(String::from).to_vec();
        assert!(!truncate_joined(&mut v, 11));
        assert_eq!(v, ["abc", "defg", "hi"]);
        assert!(truncate_joined(&mut v, 10));
        assert_eq!(v, ["abc", "defg", "h"]);
        let mut v: Vec<String> = ["abc", "defg", "hi"].map(String::from).to_vec();
        assert!(truncate_joined(&mut v, 8));
        assert_eq!(v, ["abc", "defg"], "no empty word after the space");
        let mut v: Vec<String> = ["aé"].map(String::from).to_vec();
        assert!(truncate_joined(&mut v, 2));
        assert_eq!(v, ["a"], "cut at a character boundary");
    }
}
