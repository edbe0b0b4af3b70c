//! `jasper keys`: create, roll over and retire the keys of a planned tree.
//!
//! Every node config in a directory (what `jasper plan --out` wrote) gets its
//! own key file under `<dir>/keys/<name>.key` (mode 0600), holding only what
//! its role needs. A roll-over is three steps, each followed by restarting
//! the nodes (one at a time: hedging covers a restarting proxy):
//! 1. `--add`: a new key set joins every file; nodes still send with the old.
//! 2. `--activate ID`: every node sends with the new set (all accept both).
//! 3. `--retire ID`: the old set leaves every file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use jasper_core::auth::KeyFile;
use jasper_core::config::{NodeConfig, NodeRole};

/// Flags of `jasper keys`.
#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    /// Directory of node configs (`jasper plan --out`).
    #[arg(long)]
    pub configs: PathBuf,
    /// Add a new key set (next id) to every node's key file.
    #[arg(long, conflicts_with_all = ["activate", "retire"])]
    pub add: bool,
    /// Make every node send with key set ID.
    #[arg(long, value_name = "ID", conflicts_with = "retire")]
    pub activate: Option<u8>,
    /// Remove key set ID from every node's key file.
    #[arg(long, value_name = "ID")]
    pub retire: Option<u8>,
    /// Replace existing keys with fresh ones (every node must then get its
    /// new file before it restarts).
    #[arg(long)]
    pub force: bool,
}

fn role_key(role: NodeRole) -> jasper_core::auth::KeyRole {
    match role {
        NodeRole::Sender => jasper_core::auth::KeyRole::Sender,
        NodeRole::Proxy => jasper_core::auth::KeyRole::Proxy,
        NodeRole::Receiver => jasper_core::auth::KeyRole::Receiver,
    }
}

fn load_configs(dir: &Path) -> anyhow::Result<Vec<(PathBuf, NodeConfig)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&p)?;
            let c = NodeConfig::from_toml(&text).with_context(|| format!("in {}", p.display()))?;
            out.push((p, c));
        }
    }
    if out.is_empty() {
        bail!(
            "no node configs (*.toml) in {}: run `jasper plan --out {}` first",
            dir.display(),
            dir.display()
        );
    }
    out.sort_by_key(|(_, c)| c.node.id);
    Ok(out)
}

fn key_path(dir: &Path, c: &NodeConfig) -> PathBuf {
    dir.join("keys").join(format!("{}.key", c.node.name))
}

fn read(dir: &Path, c: &NodeConfig) -> anyhow::Result<KeyFile> {
    let p = key_path(dir, c);
    jasper_io::trust::read_key_file(&p, c.node.id, role_key(c.node.role))
        .map_err(anyhow::Error::msg)
}

/// Entry point.
pub fn main(a: KeysArgs) -> anyhow::Result<()> {
    let dir = &a.configs;
    let cfgs = load_configs(dir)?;
    // Every step checks every node's file first and writes only when all
    // can change: a fleet is never left half rolled over.
    if let Some(id) = a.activate {
        let mut files = Vec::new();
        for (_, c) in &cfgs {
            let mut kf = read(dir, c)?;
            if !kf.keyset.iter().any(|k| k.id == id) {
                bail!(
                    "{} has no key set {id}: run `jasper keys --add` first (nothing was changed)",
                    c.node.name
                );
            }
            kf.active = id;
            files.push(kf);
        }
        let others = files
            .iter()
            .flat_map(|f| f.keyset.iter().map(|k| k.id))
            .any(|k| k != id);
        write_all(dir, &cfgs, &files)?;
        if others {
            println!("every node now sends with key set {id}; restart the nodes (publisher last), then `--retire` the old set");
        } else {
            println!("every node sends with key set {id} (the only one)");
        }
        return Ok(());
    }
    if let Some(id) = a.retire {
        let mut files = Vec::new();
        for (_, c) in &cfgs {
            let mut kf = read(dir, c)?;
            if kf.active == id {
                bail!(
                    "{}: key set {id} is still active: `--activate` the new one first (nothing was changed)",
                    c.node.name
                );
            }
            if !kf.keyset.iter().any(|k| k.id == id) {
                bail!("{} has no key set {id} (nothing was changed)", c.node.name);
            }
            kf.keyset.retain(|k| k.id != id);
            kf.check(c.node.id, role_key(c.node.role))
                .map_err(|e| anyhow::anyhow!("{}: {e}", c.node.name))?;
            files.push(kf);
        }
        write_all(dir, &cfgs, &files)?;
        println!("key set {id} retired; restart the nodes");
        return Ok(());
    }
    if a.add {
        let mut files = Vec::new();
        let mut next = 1u8;
        for (_, c) in &cfgs {
            let kf = read(dir, c)?;
            if kf.keyset.len() >= 2 {
                bail!(
                    "{} already holds two key sets: `--retire` one first",
                    c.node.name
                );
            }
            next = next.max(
                kf.keyset
                    .iter()
                    .map(|k| k.id)
                    .max()
                    .unwrap_or(0)
                    .checked_add(1)
                    .context("key ids exhausted (255)")?,
            );
            files.push(kf);
        }
        let masters = jasper_io::trust::random_masters(next).map_err(anyhow::Error::msg)?;
        for ((_, c), mut kf) in cfgs.iter().zip(files) {
            let new = jasper_io::trust::key_file_for(c, &masters);
            kf.keyset.extend(new.keyset);
            jasper_io::trust::write_key_file(&key_path(dir, c), &kf).map_err(anyhow::Error::msg)?;
        }
        println!("key set {next} added to every node (still sending with the old set); restart the nodes, then `--activate {next}`");
        return Ok(());
    }
    // Fresh keys for every node, configs pointed at them: never over
    // existing keys by accident.
    refuse_existing_keys(dir, a.force)?;
    let masters = jasper_io::trust::random_masters(1).map_err(anyhow::Error::msg)?;
    let mut plain: Vec<NodeConfig> = cfgs.iter().map(|(_, c)| c.clone()).collect();
    jasper_io::trust::install_keys(&mut plain, &dir.join("keys"), &masters, Some(dir))
        .map_err(anyhow::Error::msg)?;
    for ((p, _), c) in cfgs.iter().zip(plain) {
        std::fs::write(p, c.to_toml()).with_context(|| format!("cannot write {}", p.display()))?;
    }
    println!(
        "keys written to {} (mode 0600), one per node; each config names its file",
        dir.join("keys").display()
    );
    Ok(())
}

fn write_all(dir: &Path, cfgs: &[(PathBuf, NodeConfig)], files: &[KeyFile]) -> anyhow::Result<()> {
    for ((_, c), kf) in cfgs.iter().zip(files) {
        jasper_io::trust::write_key_file(&key_path(dir, c), kf).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// The master key sets of a planned tree, read back from its publisher's
/// key file in `<dir>/keys/<sender>.key`, and the active set's id.
pub fn masters_in(
    dir: &Path,
    sender: &str,
) -> anyhow::Result<(Vec<jasper_core::auth::MasterKeys>, u8)> {
    let path = dir.join("keys").join(format!("{sender}.key"));
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "--keep-keys: cannot read {} (the publisher's key file of the running tree; plan without --keep-keys for fresh keys)",
            path.display()
        )
    })?;
    let kf = KeyFile::parse(
        &text,
        jasper_core::plan::SENDER,
        jasper_core::auth::KeyRole::Sender,
    )
    .map_err(|e| anyhow::anyhow!("--keep-keys: {}: {e}", path.display()))?;
    let sets = kf.masters().with_context(|| {
        format!(
            "--keep-keys: {} lacks the tree, feed or node-master key of a set: not a publisher's key file",
            path.display()
        )
    })?;
    Ok((sets, kf.active))
}

/// Refuse to replace existing key files unless forced.
pub fn refuse_existing_keys(dir: &Path, force: bool) -> anyhow::Result<()> {
    let keys = dir.join("keys");
    let existing = std::fs::read_dir(&keys)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "key"))
                .count()
        })
        .unwrap_or(0);
    if existing > 0 && !force {
        bail!(
            "{} already holds {existing} key files: replacing them breaks every node at its next restart. \
             Roll keys over with `jasper keys --configs {} --add`, or pass --force to replace them",
            keys.display(),
            dir.display()
        );
    }
    Ok(())
}
