//! Failures injected into a `jasper local` run on a schedule: a proxy
//! killed, a receiver process killed (and restarted), the publisher killed
//! and restarted (a new session). What happened goes into the report.

use anyhow::{bail, Context};

/// One scheduled failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// SIGKILL the proxy named `name` at `at_s` seconds into the feed.
    KillProxy {
        /// Proxy name (as in the plan, e.g. `proxy2`).
        name: String,
        /// When.
        at_s: f64,
    },
    /// SIGKILL receiver process `group` at `at_s`; start it again `restart_s`
    /// later when given.
    KillReceivers {
        /// Receiver process index (`receivers0`, `receivers1`, …).
        group: usize,
        /// When.
        at_s: f64,
        /// Restart after this many seconds.
        restart_s: Option<f64>,
    },
    /// Drop the publisher at `at_s` and open a new one at once (new session).
    RestartPublisher {
        /// When.
        at_s: f64,
    },
}

impl Failure {
    /// When it happens.
    pub fn at_s(&self) -> f64 {
        match self {
            Failure::KillProxy { at_s, .. }
            | Failure::KillReceivers { at_s, .. }
            | Failure::RestartPublisher { at_s } => *at_s,
        }
    }
}

fn seconds(s: &str, what: &str) -> anyhow::Result<f64> {
    let v: f64 = s
        .parse()
        .with_context(|| format!("{what}: {s:?} is not a number of seconds"))?;
    if !(v.is_finite() && v >= 0.0) {
        bail!("{what}: {s:?} must be ≥ 0 seconds");
    }
    Ok(v)
}

/// Parse `--kill-proxy NAME@SECONDS`.
pub fn parse_kill_proxy(s: &str) -> anyhow::Result<Failure> {
    let (name, at) = s
        .split_once('@')
        .with_context(|| format!("--kill-proxy {s:?}: write NAME@SECONDS, e.g. proxy2@1.5"))?;
    Ok(Failure::KillProxy {
        name: name.to_string(),
        at_s: seconds(at, "--kill-proxy")?,
    })
}

/// Parse `--kill-receivers GROUP@SECONDS[+RESTART]`.
pub fn parse_kill_receivers(s: &str) -> anyhow::Result<Failure> {
    let (group, rest) = s.split_once('@').with_context(|| {
        format!("--kill-receivers {s:?}: write GROUP@SECONDS[+RESTART], e.g. 0@1.5+0.5")
    })?;
    let group: usize = group
        .trim_start_matches("receivers")
        .parse()
        .with_context(|| format!("--kill-receivers {s:?}: GROUP is a process index (0, 1, …)"))?;
    let (at, restart) = match rest.split_once('+') {
        Some((a, r)) => (a, Some(seconds(r, "--kill-receivers restart")?)),
        None => (rest, None),
    };
    Ok(Failure::KillReceivers {
        group,
        at_s: seconds(at, "--kill-receivers")?,
        restart_s: restart,
    })
}

/// A failure that happened, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Happened {
    /// Seconds into the feed.
    pub at_s: f64,
    /// What, in words.
    pub what: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schedules_and_explains_mistakes() {
        assert_eq!(
            parse_kill_proxy("proxy2@1.5").unwrap(),
            Failure::KillProxy {
                name: "proxy2".into(),
                at_s: 1.5
            }
        );
        assert_eq!(
            parse_kill_receivers("receivers1@2+0.5").unwrap(),
            Failure::KillReceivers {
                group: 1,
                at_s: 2.0,
                restart_s: Some(0.5)
            }
        );
        assert!(parse_kill_proxy("proxy2")
            .unwrap_err()
            .to_string()
            .contains("NAME@SECONDS"));
        assert!(parse_kill_receivers("x@1").is_err());
        assert!(parse_kill_receivers("0@-1").is_err());
    }
}
