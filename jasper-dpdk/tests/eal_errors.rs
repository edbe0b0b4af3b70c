//! EAL start-up errors are values a person can act on, not panics.

mod common;

use jasper_dpdk::Eal;

#[test]
fn no_args_and_no_ports_are_clear_errors() {
    let e = Eal::init(&[]).unwrap_err();
    assert!(e.msg.contains("core list"), "{e}");
    // A vdev that does not exist: the EAL fails or starts with no port.
    let e = Eal::init(&common::eal_args("net_nosuchdriver0")).unwrap_err();
    assert!(e.to_string().contains("rte_eal_init"), "{e}");
    // A second initialization with other arguments is refused, not UB.
    let e2 = Eal::init(&common::eal_args("net_null0")).unwrap_err();
    assert!(!e2.msg.is_empty());
}
