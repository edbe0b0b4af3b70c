//! Generate DPDK bindings against the installed libdpdk (pkg-config) and
//! compile the C shim. Fails with an actionable message when DPDK is missing.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=shim.h");
    println!("cargo:rerun-if-changed=shim.c");
    let lib = match pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "\nerror: DPDK (libdpdk >= 22.11) was not found by pkg-config: {e}\n\
                 Install it (Debian/Ubuntu: `sudo apt-get install libdpdk-dev pkg-config clang libclang-dev`),\n\
                 or build without the DPDK crates (they are not default members; \
                 `cargo build --release --bin jasper` does not need them).\n"
            );
            std::process::exit(1);
        }
    };
    // The full cflags include `-include rte_config.h -march=...`: pass them
    // to both bindgen and cc.
    let cflags = pkg_config::get_variable("libdpdk", "cflags").ok();
    let raw = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .or(cflags)
        .unwrap_or_default();
    let flags: Vec<String> = raw.split_whitespace().map(str::to_string).collect();

    let mut build = cc::Build::new();
    build.file("shim.c").warnings(false).opt_level(3);
    for f in &flags {
        build.flag(f);
    }
    for p in &lib.include_paths {
        build.include(p);
    }
    build.compile("jasper_dpdk_shim");

    let mut b = bindgen::Builder::default()
        .header("shim.h")
        .clang_args(&flags)
        .allowlist_function("jasper_.*")
        .allowlist_function(
            "rte_eal_init|rte_eal_cleanup|rte_eth_dev_count_avail|rte_eth_dev_configure|rte_eth_rx_queue_setup|\
             rte_eth_tx_queue_setup|rte_eth_dev_start|rte_eth_dev_stop|rte_eth_dev_close|rte_eth_macaddr_get|\
             rte_eth_promiscuous_enable|rte_eth_stats_get|rte_eth_dev_socket_id|rte_pktmbuf_pool_create|\
             rte_mempool_free|rte_mempool_avail_count|rte_mempool_in_use_count|rte_strerror|\
             rte_socket_id|rte_eth_dev_info_get",
        )
        .allowlist_type("rte_eth_conf|rte_ether_addr|rte_eth_stats|rte_eth_dev_info|rte_mbuf|rte_mempool")
        .allowlist_var("RTE_ETH_.*|RTE_MBUF_DEFAULT_.*|RTE_PKTMBUF_HEADROOM|SOCKET_ID_ANY")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false);
    for p in &lib.include_paths {
        b = b.clang_arg(format!("-I{}", p.display()));
    }
    let bindings = b.generate().unwrap_or_else(|e| {
        eprintln!("\nerror: bindgen could not generate DPDK bindings: {e}\nInstall clang and libclang-dev.\n");
        std::process::exit(1);
    });
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings");
}
