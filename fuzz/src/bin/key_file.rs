//! AFL target: `jasper_fuzz_targets::targets::key_file` (invariants in its docs).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        jasper_fuzz_targets::targets::key_file(data);
    });
}
