//! Loading a cloud model from TOML (`jasper sim --model FILE`): the keys of
//! `docs/MODEL.md`, defaults from the reference model, empirical
//! distributions read from their sample files.

use std::path::Path;

use jasper_core::model::{CloudModel, Dist};

fn load_samples(d: &mut Dist, base: &Path, key: &str) -> Result<(), String> {
    if let Dist::Empirical {
        file: Some(f),
        samples,
    } = d
    {
        let path = base.join(&*f);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{key}: cannot read samples {}: {e}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let v: f64 = line.parse().map_err(|_| {
                format!(
                    "{key}: {}:{}: {line:?} is not a number of ns",
                    path.display(),
                    i + 1
                )
            })?;
            samples.push(v);
        }
    }
    Ok(())
}

/// Parse a model file; relative sample files are read beside it.
pub fn load(path: &Path) -> Result<CloudModel, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut m: CloudModel =
        toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    for (key, d) in [
        ("base_ns", &mut m.base_ns),
        ("jitter_ns", &mut m.jitter_ns),
        ("slow_duration_ns", &mut m.slow_duration_ns),
        ("slow_extra_ns", &mut m.slow_extra_ns),
        ("copy_cost_ns", &mut m.copy_cost_ns),
        ("proxy_processing_ns", &mut m.proxy_processing_ns),
        ("reorder_delay_ns", &mut m.reorder_delay_ns),
        ("release_jitter_ns", &mut m.release_jitter_ns),
        ("handoff_ns", &mut m.handoff_ns),
        ("clock.tail_duration_ns", &mut m.clock.tail_duration_ns),
        ("clock.step_duration_ns", &mut m.clock.step_duration_ns),
    ] {
        load_samples(d, base, key)?;
    }
    for (i, l) in m.levels.iter_mut().enumerate() {
        for (key, d) in [("base_ns", &mut l.base_ns), ("jitter_ns", &mut l.jitter_ns)] {
            if let Some(d) = d {
                load_samples(d, base, &format!("levels[{i}].{key}"))?;
            }
        }
    }
    m.validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_empirical_samples_and_reports_bad_keys() {
        let dir = std::env::temp_dir().join(format!("jasper-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s.txt"), "# owd\n1000\n2000\n").unwrap();
        std::fs::write(
            dir.join("m.toml"),
            "loss = 0.0\n[jitter_ns]\nkind = \"empirical\"\nfile = \"s.txt\"\n",
        )
        .unwrap();
        let m = load(&dir.join("m.toml")).unwrap();
        assert_eq!(
            m.jitter_ns,
            Dist::Empirical {
                file: Some("s.txt".into()),
                samples: vec![1000.0, 2000.0]
            }
        );
        // Per-level distributions, from the MODEL.md example.
        std::fs::write(
            dir.join("levels.toml"),
            "[[levels]]\nbase_ns = { kind = \"uniform\", a = 0.0, b = 100000.0 }\n[[levels]]\njitter_ns = { kind = \"empirical\", file = \"s.txt\" }\n",
        )
        .unwrap();
        let m = load(&dir.join("levels.toml")).unwrap();
        assert_eq!(
            m.levels[0].base_ns,
            Some(Dist::Uniform {
                a: 0.0,
                b: 100000.0
            })
        );
        assert!(
            matches!(&m.levels[1].jitter_ns, Some(Dist::Empirical { samples, .. }) if samples.len() == 2)
        );
        std::fs::write(dir.join("bad.toml"), "los = 0.0\n").unwrap();
        assert!(load(&dir.join("bad.toml")).unwrap_err().contains("los"));
        std::fs::write(dir.join("bad2.toml"), "loss = 3.0\n").unwrap();
        assert!(load(&dir.join("bad2.toml")).unwrap_err().contains("loss"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
