//! Writes Muster's CRDs as YAML: `muster-crdgen [DIR]` (default `charts/muster/crds`).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "charts/muster/crds".into()),
    );
    let docs = match muster_crds::crd_yaml() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("muster-crdgen: rendering CRDs: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("muster-crdgen: creating {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (name, yaml) in docs {
        let path = dir.join(&name);
        if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("muster-crdgen: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
