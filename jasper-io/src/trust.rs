//! Loading a node's keys and building its guard and liveness tracker from
//! its config (the same for every binary).

use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use jasper_core::auth::{Auth, KeyFile, KeyRole, MasterKeys};
use jasper_core::config::{NodeConfig, NodeRole};
use jasper_core::guard::{Guard, GuardRole, Sources};
use jasper_core::liveness::Liveness;

fn key_role(role: NodeRole) -> KeyRole {
    match role {
        NodeRole::Sender => KeyRole::Sender,
        NodeRole::Proxy => KeyRole::Proxy,
        NodeRole::Receiver => KeyRole::Receiver,
    }
}

fn guard_role(role: NodeRole) -> GuardRole {
    match role {
        NodeRole::Sender => GuardRole::Sender,
        NodeRole::Proxy => GuardRole::Proxy,
        NodeRole::Receiver => GuardRole::Receiver,
    }
}

/// Read a key file, refusing one that is missing or readable by others.
pub fn read_key_file(path: &Path, node: u32, role: KeyRole) -> Result<KeyFile, String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "key file {}: {e} — create the node's keys with `jasper keys` (or `jasper plan`) and install them there",
            path.display()
        )
    })?;
    if !meta.is_file() {
        return Err(format!(
            "key file {} is not a file — point [trust] key_file at the node's `<name>.key` written by `jasper keys`",
            path.display()
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "key file {} is readable by others (mode {mode:o}) — run `chmod 600 {}` and keep it owned by the service user",
            path.display(),
            path.display()
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("key file {}: {e}", path.display()))?;
    KeyFile::parse(&text, node, role).map_err(|e| format!("{}: {e}", path.display()))
}

/// Write a key file with mode 0600 (replacing any earlier one).
pub fn write_key_file(path: &Path, keys: &KeyFile) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.write_all(keys.to_toml().as_bytes())
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Fresh master keys with key id `id`, from the operating system's random source.
pub fn random_masters(id: u8) -> Result<MasterKeys, String> {
    let mut r = [0u8; 96];
    getrandom::fill(&mut r).map_err(|e| format!("no random source for key generation: {e}"))?;
    Ok(MasterKeys::from_random(id, &r))
}

/// The key file each node of these configs needs, for these master keys.
pub fn key_file_for(cfg: &NodeConfig, masters: &MasterKeys) -> KeyFile {
    masters.key_file(
        key_role(cfg.node.role),
        cfg.node.id,
        cfg.node.hedge.map(|h| h.id),
    )
}

/// Write one key file per node into `dir` (`<name>.key`, mode 0600) and
/// point each config at it (`[trust] key_file`, `insecure = false`).
/// `relative` writes the path relative to the configs' directory.
pub fn install_keys(
    cfgs: &mut [NodeConfig],
    dir: &Path,
    masters: &MasterKeys,
    relative: Option<&Path>,
) -> Result<(), String> {
    install_key_sets(
        cfgs,
        dir,
        std::slice::from_ref(masters),
        masters.id,
        relative,
    )
}

/// Like [`install_keys`] with every key set of `sets` in each file and
/// `active` the set nodes send with (re-planning in the middle of a
/// roll-over keeps both sets).
pub fn install_key_sets(
    cfgs: &mut [NodeConfig],
    dir: &Path,
    sets: &[MasterKeys],
    active: u8,
    relative: Option<&Path>,
) -> Result<(), String> {
    for c in cfgs.iter_mut() {
        let path = dir.join(format!("{}.key", c.node.name));
        let kf = KeyFile {
            node: c.node.id,
            hedge_node: c.node.hedge.map(|h| h.id),
            active,
            keyset: sets
                .iter()
                .map(|m| {
                    m.for_endpoints(key_role(c.node.role), c.node.id, c.node.hedge.map(|h| h.id))
                })
                .collect(),
        };
        write_key_file(&path, &kf)?;
        let shown = match relative {
            Some(base) => path
                .strip_prefix(base)
                .map(Path::to_path_buf)
                .unwrap_or(path),
            None => path,
        };
        c.trust.key_file = Some(shown);
        c.trust.insecure = false;
    }
    Ok(())
}

/// The node's keys: `None` only when the config says `insecure = true`
/// and names no key file.
pub fn load_auth(cfg: &NodeConfig) -> Result<Option<Auth>, String> {
    match &cfg.trust.key_file {
        Some(path) => {
            let kf = read_key_file(path, cfg.node.id, key_role(cfg.node.role))?;
            Ok(Some(Auth::new(&kf)))
        }
        None if cfg.trust.insecure => Ok(None),
        None => Err(format!(
            "node {:?} has no [trust] key_file — create keys with `jasper keys`, or set insecure = true for a local experiment",
            cfg.node.name
        )),
    }
}

/// Who may send what to this node, from its table and peers.
pub fn sources(cfg: &NodeConfig) -> Sources {
    let upstream = cfg
        .table
        .upstreams
        .iter()
        .filter_map(|u| cfg.peer(*u))
        .collect();
    let children = cfg
        .table
        .report_children
        .iter()
        .map(|c| (*c, node_addrs(cfg, *c)))
        .collect();
    // Every node this one sends data to (over every spraying rotation and
    // hedge slot), with its MP's other endpoint: who may ask for
    // retransmissions.
    let mut fed = std::collections::BTreeSet::new();
    cfg.table.fanout.for_each(0, |c, _| {
        fed.insert(c);
    });
    if let jasper_core::plan::Fanout::Hedged { slots, .. } = &cfg.table.fanout {
        fed.extend(slots.iter().flatten().copied());
    }
    // An MP asks as its primary endpoint whichever endpoint this node feeds.
    let mps: Vec<u32> = fed
        .iter()
        .filter_map(|c| cfg.peers.iter().find(|p| p.id == *c).and_then(|p| p.mp))
        .collect();
    fed.extend(
        cfg.peers
            .iter()
            .filter(|p| p.mp.is_some_and(|m| mps.contains(&m)))
            .map(|p| p.id),
    );
    let downstream = fed.into_iter().map(|c| (c, node_addrs(cfg, c))).collect();
    Sources {
        upstream,
        children,
        downstream,
    }
}

/// The addresses node `id` may send from: its own, and its MP's other endpoint.
fn node_addrs(cfg: &NodeConfig, id: u32) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = cfg.peer(id).into_iter().collect();
    if let Some(mp) = cfg.peers.iter().find(|p| p.id == id).and_then(|p| p.mp) {
        addrs.extend(
            cfg.peers
                .iter()
                .filter(|p| p.mp == Some(mp))
                .map(|p| p.addr),
        );
    }
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

/// The guard for this node (loads its keys).
pub fn guard(cfg: &NodeConfig) -> Result<Guard, String> {
    let auth = load_auth(cfg)?;
    Ok(Guard::new(
        guard_role(cfg.node.role),
        cfg.trust.clone(),
        auth,
        sources(cfg),
    ))
}

/// Liveness of the node's upstreams.
pub fn liveness(cfg: &NodeConfig) -> Liveness {
    let ups: Vec<_> = cfg
        .table
        .upstreams
        .iter()
        .filter_map(|u| cfg.peer(*u).map(|a| (*u, a)))
        .collect();
    Liveness::new(&ups, cfg.trust.upstream_dead_after_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_must_exist_and_be_private() {
        let dir = std::env::temp_dir().join(format!("jasper-keys-{}", std::process::id()));
        let path = dir.join("mp.key");
        let m = MasterKeys::from_random(1, &[5u8; 96]);
        let kf = m.key_file(KeyRole::Receiver, 4, None);
        std::fs::create_dir_all(&dir).unwrap();
        let not_a_file = read_key_file(&dir, 4, KeyRole::Receiver).unwrap_err();
        assert!(not_a_file.contains("not a file"), "{not_a_file}");
        let missing = read_key_file(&path, 4, KeyRole::Receiver).unwrap_err();
        assert!(missing.contains("jasper keys"), "{missing}");
        write_key_file(&path, &kf).unwrap();
        assert_eq!(read_key_file(&path, 4, KeyRole::Receiver).unwrap(), kf);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = read_key_file(&path, 4, KeyRole::Receiver).unwrap_err();
        assert!(open.contains("chmod 600"), "{open}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
