//! Write the seed corpus of every target: `write_seeds <dir>` makes
//! `<dir>/<target>/seed-NN`.
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "in".into()));
    for (name, _) in jasper_fuzz_targets::TARGETS {
        let d = dir.join(name);
        std::fs::create_dir_all(&d)?;
        for (i, s) in jasper_fuzz_targets::mutate::seeds(name).iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i:02}")), s)?;
        }
    }
    Ok(())
}
