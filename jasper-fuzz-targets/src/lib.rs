//! # jasper-fuzz-targets
//!
//! One fuzz target per parser and per state machine of `jasper-core`, with
//! the invariants each asserts (see [`check`] and [`targets`]). Two drivers
//! call the same functions:
//! - `fuzz/` (its own workspace): one AFL binary per target, run by hand
//!   (`fuzz/README.md`);
//! - `tests/mutation.rs`: a bounded, seeded mutation run in CI.
//!
//! | target | what | asserts |
//! |---|---|---|
//! | [`targets::wire`] | `Repr::parse_bytes`, `Packet::new_checked` | never panics; both agree; messages fill the body; re-emit parses back |
//! | [`targets::key_file`] | `KeyFile::parse` | accepted ⇒ checks again, round-trips, role holds only its keys |
//! | [`targets::node_config`] | `NodeConfig::from_toml` + `validate` | accepted ⇒ round-trips; every state machine it configures starts and takes a packet |
//! | [`targets::guard`] | `Guard::admit` (proxy, receiver, publisher; 0, 1 or 2 key sets) | only rightful, plausible, listed packets pass; one counter per packet; no report twice |
//! | [`targets::receiver`] | `Receiver` | no double release; never before the deadline unless early/late; caps hold; all accepted released |
//! | [`targets::proxy`] | `ProxyCore` | never forwards a malformed body or a data copy twice; rewrites only path/hops |
//! | [`targets::reducer`] | `Reducer` | equals a model: max of fresh clamped estimates, saturating sums |
//! | [`targets::sender`] | `SenderCore` | valid tagged packets, contiguous sequences, deadlines monotone and ≤ ceiling |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod build;
pub mod check;
pub mod input;
pub mod mutate;
pub mod targets;

/// A fuzz target: takes the fuzzer's bytes, panics on a violated invariant.
pub type Target = fn(&[u8]);

/// Every target by name, as the AFL binaries and the seed writer call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("wire", targets::wire),
    ("key_file", targets::key_file),
    ("node_config", targets::node_config),
    ("guard", targets::guard),
    ("receiver", targets::receiver),
    ("proxy", targets::proxy),
    ("reducer", targets::reducer),
    ("sender", targets::sender),
];
