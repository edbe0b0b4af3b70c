//! # jasper-core
//!
//! The sans-I/O heart of Jasper-rs, a fair market-data multicast service for
//! public clouds. Nothing here opens a socket, starts a thread or reads a
//! clock: drivers (kernel UDP, DPDK, the simulator) move bytes and pass
//! `now` in. What the simulator proves is therefore what the binaries do.
//! The nodes working together (exactly once and in order, late messages
//! released at once, losses seen as gaps, the deadline converging to the
//! tree's delay, skewed clocks) are tested through the simulator, in
//! `jasper-sim/tests/scenarios.rs`; each module's own tests sit beside it.
//!
//! | module | what |
//! |---|---|
//! | [`auth`] | keys, packet tags (tree / feed / node), key files and rotation |
//! | [`guard`] | the gate in front of every state machine: parse, source, tag, replay and plausibility checks, counted by reason |
//! | [`liveness`] | which upstreams went silent (dead after a configured time, named) |
//! | [`wire`] | packet format v1 (`docs/PROTOCOL.md`): zero-copy [`wire::Packet`] views, validated [`wire::Repr`] |
//! | [`plan`] | inventory → tree (depth/fanout, sibling hedging, spraying, receiver hedging) → forwarding tables |
//! | [`sender`] | publisher state machine: packing, sequencing, send time and deadline stamping, heartbeats |
//! | [`proxy`] | proxy state machine: hedged fan-out decisions, report reduction |
//! | [`receiver`] | dedup, gap detection, deadline-ordered hold-and-release, delay estimation |
//! | [`deadline`] | OWD percentile window, max-reduction, the deadline rule |
//! | [`clock`] | the clock trait and status drivers implement |
//! | [`metrics`] | OWD, OML, DWS, P(F), holding, late, loss, duplicates (HdrHistogram, mergeable) |
//! | [`model`] | the reference cloud model (delays, loss, clocks), seeded |
//! | [`config`] | per-node TOML, validated, actionable errors |
//! | [`plan_configs`] | plan → one validated config per node |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod clock;
pub mod config;
pub mod deadline;
pub mod dedup;
pub mod feed_memo;
pub mod guard;
pub mod liveness;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod plan_configs;
pub mod proxy;
pub mod receiver;
pub mod recovery;
pub mod retransmit;
pub mod sender;
pub mod wire;
