//! AFL target: `jasper_fuzz_targets::targets::wire` (invariants in its docs).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        jasper_fuzz_targets::targets::wire(data);
    });
}
