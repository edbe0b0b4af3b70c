//! What `jasper plan` reads and writes for a deployment, beside the tree:
//!
//! - per-node deployment fields of the inventory, next to `name` and `addr`:
//!   `host` (where Ansible reaches the machine; default the IP of `addr`) and
//!   `dpdk = { lcores = "1", pci = "0000:00:06.0" }` (the node's own EAL
//!   cores and data NIC, required for every proxy and receiver when planning
//!   with `--backend dpdk`; a missing one is an error naming the node and
//!   the field);
//! - with `--ansible`, `hosts.yml`, the Ansible inventory `deploy/ansible` runs on: every
//!   machine with the nodes it runs (name, role, tree level, unit), groups
//!   per role and per proxy level, and the start order (receivers, proxies
//!   from the last level up, the publisher last).
//!
//! The core's [`Inventory`] stays what the tree needs; these fields are
//! taken out of the same file before it is parsed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context};
use jasper_core::config::{BackendKind, DpdkSection, NodeConfig, NodeRole};
use jasper_core::plan::{Inventory, Plan, Role};
use serde::Deserialize;

/// A node's DPDK settings in the inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkHost {
    /// EAL core list (`-l`), e.g. `"1"` or `"2-3"`: cores of this VM the
    /// node may poll on.
    #[serde(default)]
    pub lcores: Option<String>,
    /// PCI address of the data NIC (`-a`), e.g. `"0000:00:06.0"`
    /// (`dpdk-devbind.py --status` on the VM). The management NIC stays on
    /// the kernel.
    #[serde(default)]
    pub pci: Option<String>,
    /// A virtual device instead of a NIC (rehearsals and tests), e.g.
    /// `"net_af_packet0,iface=eth1"`; runs without hugepages.
    #[serde(default)]
    pub vdev: Option<String>,
    /// 2 MiB hugepages the machine reserves for this node (default 1024).
    #[serde(default)]
    pub hugepages: Option<u32>,
    /// Further EAL arguments, appended.
    #[serde(default)]
    pub eal_args: Vec<String>,
}

/// Default hugepages per DPDK node (2 MiB each).
pub const DEFAULT_HUGEPAGES: u32 = 1024;

/// Deployment fields of one inventory entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deploy {
    /// Management address or name Ansible connects to.
    pub host: Option<String>,
    /// DPDK settings.
    pub dpdk: Option<DpdkHost>,
}

/// The inventory file: the tree's inventory and each entry's deployment
/// fields by name (hedge endpoints share their MP's).
#[derive(Debug, Clone)]
pub struct InventoryFile {
    /// What the plan needs.
    pub inventory: Inventory,
    /// `host` and `dpdk` by node name.
    pub deploy: BTreeMap<String, Deploy>,
}

/// Take the named proxies and receivers out of the inventory (re-planning
/// around dead or retired nodes). Every name must exist; the publisher
/// cannot be excluded.
pub fn exclude(inv: &mut Inventory, names: &[String]) -> anyhow::Result<()> {
    for n in names {
        if *n == inv.sender.name {
            anyhow::bail!("--exclude {n}: the publisher cannot be planned around; give the inventory another [sender]");
        }
        let known = inv.proxies.iter().any(|p| p.name == *n)
            || inv.receivers.iter().any(|r| r.name == *n)
            || inv.publishers.iter().any(|p| p.name == *n);
        if !known {
            anyhow::bail!(
                "--exclude {n}: no proxy, receiver or [[publisher]] of that name in the inventory"
            );
        }
    }
    inv.proxies.retain(|p| !names.contains(&p.name));
    inv.receivers.retain(|r| !names.contains(&r.name));
    inv.publishers.retain(|p| !names.contains(&p.name));
    Ok(())
}

/// Read an inventory TOML with its deployment fields.
pub fn read_inventory(path: &Path) -> anyhow::Result<InventoryFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_inventory(&text).with_context(|| format!("{} is not a valid inventory", path.display()))
}

fn take_deploy(entry: &mut toml::Value, section: &str) -> anyhow::Result<(String, Deploy)> {
    let table = entry
        .as_table_mut()
        .with_context(|| format!("[{section}] entries are tables"))?;
    let name = table
        .get("name")
        .and_then(|n| n.as_str())
        .map(String::from)
        .with_context(|| format!("a [{section}] entry has no name"))?;
    let host = match table.remove("host") {
        None => None,
        Some(toml::Value::String(h)) if !h.is_empty() => Some(h),
        Some(_) => bail!(
            "node {name:?}: `host` must be a non-empty string (its management address or DNS name)"
        ),
    };
    let dpdk = match table.remove("dpdk") {
        None => None,
        Some(v) => Some(
            v.try_into::<DpdkHost>()
                .with_context(|| format!("node {name:?}: `dpdk`"))?,
        ),
    };
    Ok((name, Deploy { host, dpdk }))
}

/// Parse an inventory with its deployment fields.
pub fn parse_inventory(text: &str) -> anyhow::Result<InventoryFile> {
    let mut value: toml::Value = toml::from_str(text)?;
    let mut deploy = BTreeMap::new();
    if let Some(root) = value.as_table_mut() {
        if let Some(s) = root.get_mut("sender") {
            let (n, d) = take_deploy(s, "sender")?;
            deploy.insert(n, d);
        }
        for section in ["proxy", "receiver", "publisher"] {
            if let Some(toml::Value::Array(entries)) = root.get_mut(section) {
                for e in entries {
                    let (n, d) = take_deploy(e, section)?;
                    deploy.insert(n, d);
                }
            }
        }
    }
    let inventory: Inventory = value.try_into()?;
    Ok(InventoryFile { inventory, deploy })
}

fn valid_pci(s: &str) -> bool {
    // DDDD:BB:DD.F (domain optional), hexadecimal.
    let (rest, func) = match s.rsplit_once('.') {
        Some(x) => x,
        None => return false,
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let hex = |p: &str, n: usize| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit());
    func.len() == 1
        && func.chars().all(|c| ('0'..='7').contains(&c))
        && match parts.as_slice() {
            [d, b, dev] => hex(d, 4) && hex(b, 2) && hex(dev, 2),
            [b, dev] => hex(b, 2) && hex(dev, 2),
            _ => false,
        }
}

fn valid_lcores(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ',' | '-' | '@' | '(' | ')'))
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '(')
}

const DPDK_EXAMPLE: &str = "dpdk = { lcores = \"1\", pci = \"0000:00:06.0\" }";

/// Check, before anything is written, that every node `--backend dpdk`
/// turns into a DPDK node has its own settings; errors name the node and
/// the field.
pub fn check_dpdk(inv: &InventoryFile) -> anyhow::Result<()> {
    let nodes = inv
        .inventory
        .proxies
        .iter()
        .map(|p| (p.name.as_str(), false))
        .chain(
            inv.inventory
                .receivers
                .iter()
                .map(|r| (r.name.as_str(), r.hedge_addr.is_some())),
        );
    for (name, hedged) in nodes {
        let d = inv.deploy.get(name).cloned().unwrap_or_default();
        let Some(dpdk) = d.dpdk else {
            bail!(
                "node {name:?} has no `dpdk` settings: with --backend dpdk every proxy and receiver names its own EAL cores and NIC in the inventory, e.g. {DPDK_EXAMPLE}"
            );
        };
        match dpdk.lcores.as_deref() {
            None => bail!("node {name:?}: `dpdk.lcores` is missing: the EAL core list of this node (cores it may poll on, not core 0 where the kernel works), e.g. lcores = \"1\""),
            Some(l) if !valid_lcores(l) => bail!("node {name:?}: `dpdk.lcores` = {l:?} is not an EAL core list (e.g. \"1\", \"1-2\", \"1,3\")"),
            Some(_) => {}
        }
        match (dpdk.pci.as_deref(), dpdk.vdev.as_deref()) {
            (None, None) => bail!("node {name:?}: `dpdk.pci` is missing: the PCI address of its data NIC (`dpdk-devbind.py --status` on the VM), e.g. pci = \"0000:00:06.0\""),
            (Some(_), Some(_)) => bail!("node {name:?}: `dpdk.pci` and `dpdk.vdev` are both set: give one (vdev only for rehearsals and tests)"),
            (Some(p), None) if !valid_pci(p) => bail!("node {name:?}: `dpdk.pci` = {p:?} is not a PCI address (DDDD:BB:DD.F, e.g. \"0000:00:06.0\")"),
            _ => {}
        }
        if d.host.is_none() && dpdk.pci.is_some() {
            bail!("node {name:?}: `host` is missing: its data address is on the NIC DPDK takes from the kernel, so Ansible needs the management address, e.g. host = \"10.0.100.5\"");
        }
        if hedged {
            bail!("node {name:?}: `hedge_addr` with --backend dpdk: a DPDK receiver serves exactly one address (drop hedge_addr, or plan this tree with --backend udp)");
        }
    }
    Ok(())
}

/// A file prefix for the node's EAL: its name, kept to safe characters.
fn file_prefix(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("jasper_{s}")
}

/// The node's EAL arguments from its settings: hugepages through memfd
/// (`--in-memory`, nothing to mount or own) for a NIC; no hugepages for a
/// virtual device.
pub fn eal_args(name: &str, d: &DpdkHost) -> Vec<String> {
    let lcores = d.lcores.clone().unwrap_or_default();
    let mut a: Vec<String> = vec!["-l".into(), lcores];
    if let Some(pci) = &d.pci {
        a.extend(["-a".into(), pci.clone(), "--in-memory".into()]);
    } else if let Some(vdev) = &d.vdev {
        a.extend(
            ["--no-huge", "-m", "256", "--no-pci", "--no-shconf"]
                .iter()
                .map(|s| s.to_string()),
        );
        a.push(format!("--vdev={vdev}"));
    }
    a.extend(["--file-prefix".into(), file_prefix(name)]);
    a.extend(d.eal_args.iter().cloned());
    a
}

/// Turn a proxy or receiver config into a DPDK node with its own settings
/// (checked by [`check_dpdk`] first).
pub fn make_dpdk(c: &mut NodeConfig, inv: &InventoryFile) -> anyhow::Result<()> {
    if c.node.role == NodeRole::Sender {
        return Ok(());
    }
    let ip = match c.node.listen[0].ip() {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => bail!(
            "the DPDK backend speaks IPv4 only; {} has an IPv6 address",
            c.node.name
        ),
    };
    let d = inv
        .deploy
        .get(&c.node.name)
        .and_then(|d| d.dpdk.clone())
        .with_context(|| format!("node {:?} has no `dpdk` settings", c.node.name))?;
    c.backend.kind = BackendKind::Dpdk;
    c.backend.dpdk = Some(DpdkSection {
        eal_args: eal_args(&c.node.name, &d),
        port: 0,
        ip,
        static_arp: vec![],
        mbufs: 8191,
    });
    Ok(())
}

/// Node names become file names (`<name>.toml`, `keys/<name>.key`) and
/// systemd instance names (`jasper-proxy@<name>`): check them all before
/// anything is written.
pub fn check_names(cfgs: &[NodeConfig]) -> anyhow::Result<()> {
    cfgs.iter().try_for_each(|c| check_name(&c.node.name))
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        bail!("node name {name:?} names its config, key file and systemd unit: use letters, digits, '.', '_' and '-' only");
    }
    Ok(())
}

/// A YAML scalar: a JSON string is a valid double-quoted YAML string.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

struct Node<'a> {
    name: &'a str,
    role: &'static str,
    level: u32,
    unit: String,
    host: String,
    dpdk: Option<DpdkHost>,
}

/// The Ansible inventory for the configs in `cfgs` (one per sender, proxy
/// and MP, as written beside it).
pub fn hosts_yml(
    plan: &Plan,
    cfgs: &[NodeConfig],
    inv: &InventoryFile,
    backend: &str,
) -> anyhow::Result<String> {
    let mut nodes: Vec<Node> = Vec::new();
    for c in cfgs {
        check_name(&c.node.name)?;
        let planned = &plan.nodes[c.node.id as usize];
        let (role, level, unit) = match planned.role {
            Role::Sender => (
                "sender",
                0,
                format!("jasper-publisher@{}.service", c.node.name),
            ),
            Role::Proxy { level } => (
                "proxy",
                level,
                format!("jasper-proxy@{}.service", c.node.name),
            ),
            Role::Receiver { .. } => (
                "receiver",
                plan.depth + 1,
                format!("jasper-receiver@{}.service", c.node.name),
            ),
        };
        let d = inv.deploy.get(&c.node.name).cloned().unwrap_or_default();
        let host = d
            .host
            .clone()
            .unwrap_or_else(|| c.node.listen[0].ip().to_string());
        nodes.push(Node {
            name: &c.node.name,
            role,
            level,
            unit,
            host,
            dpdk: (c.backend.kind == BackendKind::Dpdk).then(|| d.dpdk.unwrap_or_default()),
        });
    }
    // Start order: receivers, proxies from the last level up, the publisher.
    let mut order: Vec<&Node> = nodes.iter().collect();
    order.sort_by_key(|n| match n.role {
        "receiver" => (0, 0),
        "proxy" => (1, u32::MAX - n.level),
        _ => (2, 0),
    });
    let mut hosts: BTreeMap<&str, Vec<&Node>> = BTreeMap::new();
    for n in &nodes {
        hosts.entry(n.host.as_str()).or_default().push(n);
    }
    use std::fmt::Write;
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Ansible inventory written by `jasper plan` (do not edit: plan again)."
    );
    let _ = writeln!(y, "# deploy/ansible/site.yml runs on it: ansible-playbook -i hosts.yml deploy/ansible/site.yml");
    let _ = writeln!(y, "# Configs and keys are read from this file's directory.");
    let _ = writeln!(y, "all:");
    let _ = writeln!(y, "  vars:");
    let _ = writeln!(y, "    jasper_backend: {}", q(backend));
    let _ = writeln!(y, "    jasper_depth: {}", plan.depth);
    let _ = writeln!(y, "    jasper_start_order:");
    for n in &order {
        let _ = writeln!(
            y,
            "      - {{ host: {}, name: {}, role: {}, level: {}, unit: {} }}",
            q(&n.host),
            q(n.name),
            q(n.role),
            n.level,
            q(&n.unit)
        );
    }
    let _ = writeln!(y, "  hosts:");
    for (host, ns) in &hosts {
        let _ = writeln!(y, "    {}:", q(host));
        let _ = writeln!(y, "      ansible_host: {}", q(host));
        let _ = writeln!(y, "      jasper_nodes:");
        for n in ns {
            let _ = writeln!(
                y,
                "        - {{ name: {}, role: {}, level: {}, unit: {}, dpdk: {} }}",
                q(n.name),
                q(n.role),
                n.level,
                q(&n.unit),
                n.dpdk.is_some()
            );
        }
        let nics: Vec<String> = ns
            .iter()
            .filter_map(|n| n.dpdk.as_ref()?.pci.as_deref().map(q))
            .collect();
        let hugepages: u32 = ns
            .iter()
            .filter_map(|n| n.dpdk.as_ref())
            .filter(|d| d.pci.is_some())
            .map(|d| d.hugepages.unwrap_or(DEFAULT_HUGEPAGES))
            .sum();
        let _ = writeln!(y, "      jasper_dpdk_nics: [{}]", nics.join(", "));
        let _ = writeln!(y, "      jasper_hugepages: {hugepages}");
    }
    let _ = writeln!(y, "  children:");
    let mut group = |name: String, members: Vec<&str>| {
        let _ = writeln!(y, "    {name}:");
        if members.is_empty() {
            let _ = writeln!(y, "      hosts: {{}}");
            return;
        }
        let _ = writeln!(y, "      hosts:");
        let mut seen = std::collections::BTreeSet::new();
        for m in members {
            if seen.insert(m) {
                let _ = writeln!(y, "        {}: {{}}", q(m));
            }
        }
    };
    let by = |pred: &dyn Fn(&Node) -> bool| -> Vec<&str> {
        nodes
            .iter()
            .filter(|n| pred(n))
            .map(|n| n.host.as_str())
            .collect()
    };
    group("jasper_sender".into(), by(&|n| n.role == "sender"));
    group("jasper_proxies".into(), by(&|n| n.role == "proxy"));
    for l in 1..=plan.depth {
        group(
            format!("jasper_proxies_level_{l}"),
            by(&|n| n.role == "proxy" && n.level == l),
        );
    }
    group("jasper_receivers".into(), by(&|n| n.role == "receiver"));
    group(
        "jasper_dpdk".into(),
        by(&|n| n.dpdk.as_ref().is_some_and(|d| d.pci.is_some())),
    );
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jasper_core::plan::TreeSpec;

    const INV: &str = r#"
        [sender]
        name = "pub"
        addr = "10.0.0.10:7000"
        [[proxy]]
        name = "root"
        addr = "10.0.1.1:7000"
        host = "mgmt-root"
        dpdk = { lcores = "1", pci = "0000:00:06.0" }
        [[proxy]]
        name = "pa"
        addr = "10.0.1.2:7000"
        host = "10.0.101.2"
        dpdk = { lcores = "2-3", pci = "00:07.0", hugepages = 512 }
        [[receiver]]
        name = "mp-a"
        addr = "10.0.2.1:7000"
        dpdk = { lcores = "1", vdev = "net_af_packet0,iface=eth1" }
        [[receiver]]
        name = "mp-b"
        addr = "10.0.2.2:7000"
        host = "mgmt-b"
        dpdk = { lcores = "1", pci = "0000:00:06.0" }
    "#;

    #[test]
    fn deployment_fields_are_taken_out_before_planning() {
        let f = parse_inventory(INV).unwrap();
        assert_eq!(f.inventory.proxies.len(), 2);
        assert_eq!(f.deploy["root"].host.as_deref(), Some("mgmt-root"));
        assert_eq!(
            f.deploy["pa"].dpdk.as_ref().unwrap().lcores.as_deref(),
            Some("2-3")
        );
        assert_eq!(f.deploy["pub"], Deploy::default());
        check_dpdk(&f).unwrap();
        let a = eal_args("pa", f.deploy["pa"].dpdk.as_ref().unwrap());
        assert_eq!(
            a,
            [
                "-l",
                "2-3",
                "-a",
                "00:07.0",
                "--in-memory",
                "--file-prefix",
                "jasper_pa"
            ]
        );
        let a = eal_args("mp-a", f.deploy["mp-a"].dpdk.as_ref().unwrap());
        assert!(a.contains(&"--no-huge".to_string()));
        assert!(a.contains(&"--vdev=net_af_packet0,iface=eth1".to_string()));
        // Unknown fields are still refused, in the tree's part and in ours.
        let bad = INV.replace("hugepages = 512", "hugepage = 512");
        let e = format!("{:#}", parse_inventory(&bad).unwrap_err());
        assert!(e.contains("\"pa\"") && e.contains("hugepage"), "{e}");
        let bad = INV.replace("host = \"mgmt-b\"", "hots = \"mgmt-b\"");
        assert!(parse_inventory(&bad).is_err());
    }

    #[test]
    fn a_dpdk_node_without_its_settings_is_an_error_naming_node_and_field() {
        let cases = [
            (
                "dpdk = { lcores = \"2-3\", pci = \"00:07.0\", hugepages = 512 }",
                "no `dpdk` settings",
            ),
            ("dpdk = { pci = \"00:07.0\" }", "`dpdk.lcores` is missing"),
            ("dpdk = { lcores = \"2-3\" }", "`dpdk.pci` is missing"),
            (
                "dpdk = { lcores = \"2-3\", pci = \"0000:00:6.0\" }",
                "not a PCI address",
            ),
            (
                "dpdk = { lcores = \"core2\", pci = \"00:07.0\" }",
                "not an EAL core list",
            ),
        ];
        for (replace, expect) in cases {
            let text = INV.replace(
                "dpdk = { lcores = \"2-3\", pci = \"00:07.0\", hugepages = 512 }",
                if expect.contains("no `dpdk`") {
                    ""
                } else {
                    replace
                },
            );
            let e = check_dpdk(&parse_inventory(&text).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains("node \"pa\"") && e.contains(expect), "{e}");
        }
        let text = INV.replace("host = \"10.0.101.2\"", "");
        let e = check_dpdk(&parse_inventory(&text).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("node \"pa\"") && e.contains("`host` is missing"),
            "{e}"
        );
        let text = INV.replace(
            "name = \"mp-b\"\n        addr = \"10.0.2.2:7000\"",
            "name = \"mp-b\"\n        addr = \"10.0.2.2:7000\"\n        hedge_addr = \"10.0.3.2:7000\"",
        );
        let e = check_dpdk(&parse_inventory(&text).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("node \"mp-b\"") && e.contains("hedge_addr"),
            "{e}"
        );
    }

    #[test]
    fn excluded_nodes_leave_the_plan_and_unknown_names_are_errors() {
        let mut f = parse_inventory(INV).unwrap();
        let before = f.inventory.proxies.len();
        let victim = f.inventory.proxies[0].name.clone();
        assert!(exclude(&mut f.inventory, &["nobody".into()]).is_err());
        let sender = f.inventory.sender.name.clone();
        assert!(exclude(&mut f.inventory, &[sender]).is_err());
        exclude(&mut f.inventory, std::slice::from_ref(&victim)).unwrap();
        assert_eq!(f.inventory.proxies.len(), before - 1);
        assert!(f.inventory.proxies.iter().all(|p| p.name != victim));
    }

    #[test]
    fn hosts_yml_lists_machines_groups_and_start_order() {
        let f = parse_inventory(INV).unwrap();
        let spec = TreeSpec {
            depth: Some(2),
            fanout: Some(2),
            roots: 1,
            ..TreeSpec::default()
        };
        let plan = Plan::build(&f.inventory, &spec).unwrap();
        let opts = jasper_core::plan_configs::ConfigOptions::default();
        let mut cfgs = jasper_core::plan_configs::node_configs(&plan, &opts);
        for c in &mut cfgs {
            make_dpdk(c, &f).unwrap();
        }
        let y = hosts_yml(&plan, &cfgs, &f, "dpdk").unwrap();
        assert!(
            y.contains("    \"mgmt-root\":\n      ansible_host: \"mgmt-root\""),
            "{y}"
        );
        // The sender has no `host`: the IP of its address.
        assert!(y.contains("    \"10.0.0.10\":"), "{y}");
        assert!(
            y.contains("jasper_dpdk_nics: [\"00:07.0\"]\n      jasper_hugepages: 512"),
            "{y}"
        );
        // A vdev node reserves no hugepages and binds no NIC.
        assert!(
            y.contains("jasper_dpdk_nics: []\n      jasper_hugepages: 0"),
            "{y}"
        );
        let order: Vec<&str> = y
            .lines()
            .filter(|l| l.starts_with("      - { host:"))
            .map(|l| {
                l.split("name: \"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(order, ["mp-a", "mp-b", "pa", "root", "pub"]);
        assert!(
            y.contains("    jasper_proxies_level_2:\n      hosts:\n        \"10.0.101.2\": {}"),
            "{y}"
        );
        assert!(y.contains("unit: \"jasper-receiver@mp-a.service\""), "{y}");
        // Names become file and unit names.
        let mut odd = cfgs.clone();
        odd[1].node.name = "root proxy".into();
        let e = hosts_yml(&plan, &odd, &f, "dpdk").unwrap_err().to_string();
        assert!(e.contains("\"root proxy\""), "{e}");
    }
}
