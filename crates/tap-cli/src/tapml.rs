//! The `tapml` Python package (`python/tapml/`), embedded in the binary so `tap run` can put
//! the copy that matches this tap on the command's `PYTHONPATH` with no install step.

use std::path::{Path, PathBuf};

/// Every file of the package, as `(path below python/, content)`. The test
/// `the_embedded_tapml_is_byte_identical_to_python_dir` fails when a file is added to,
/// changed in or removed from `python/tapml/` without this list following.
pub const FILES: &[(&str, &[u8])] = &[
    ("tapml/__init__.py", include_bytes!("../../../python/tapml/__init__.py")),
    ("tapml/_core.py", include_bytes!("../../../python/tapml/_core.py")),
    ("tapml/py.typed", include_bytes!("../../../python/tapml/py.typed")),
    ("tapml/torch.py", include_bytes!("../../../python/tapml/torch.py")),
    ("tapml/integrations/__init__.py", include_bytes!("../../../python/tapml/integrations/__init__.py")),
    ("tapml/integrations/_publish.py", include_bytes!("../../../python/tapml/integrations/_publish.py")),
    ("tapml/integrations/lightning.py", include_bytes!("../../../python/tapml/integrations/lightning.py")),
    ("tapml/integrations/transformers.py", include_bytes!("../../../python/tapml/integrations/transformers.py")),
];

/// Writes the package below `dir` (a directory of its own, which is then what goes on
/// `PYTHONPATH`). On an error nothing is left: a half-written package would fail the
/// command's import in a way that names neither tap nor the cause.
pub fn install(dir: &Path) -> std::io::Result<PathBuf> {
    let result = FILES.iter().try_for_each(|(rel, body)| {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, body)
    });
    match result {
        Ok(()) => Ok(dir.to_owned()),
        Err(e) => {
            let _ = std::fs::remove_dir_all(dir);
            Err(e)
        }
    }
}

/// Where tapml stages checkpoints for `ckpt` (`.<name>.tapml` beside it, as
/// `_staging_root` in python/tapml/_core.py says).
pub fn staging_dir(ckpt: &Path) -> PathBuf {
    let name = ckpt.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    ckpt.with_file_name(format!(".{name}.tapml"))
}

/// `PYTHONPATH` for the command: tap's copy first, then what the caller had.
pub fn python_path(dir: &Path, inherited: Option<&std::ffi::OsStr>) -> std::ffi::OsString {
    let mut out = dir.as_os_str().to_owned();
    if let Some(rest) = inherited.filter(|r| !r.is_empty()) {
        out.push(":");
        out.push(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package_files(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.join("tapml")];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).expect("read python/tapml") {
                let path = entry.expect("entry").path();
                let name = path.file_name().expect("name").to_string_lossy().into_owned();
                if path.is_dir() {
                    if name != "__pycache__" {
                        stack.push(path);
                    }
                } else if !name.ends_with(".pyc") {
                    out.push(path.strip_prefix(root).expect("below").to_string_lossy().replace('\\', "/"));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn the_embedded_tapml_is_byte_identical_to_python_dir() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../python");
        let mut embedded: Vec<String> = FILES.iter().map(|(p, _)| (*p).to_owned()).collect();
        embedded.sort();
        assert_eq!(embedded, package_files(&root), "tapml::FILES must list every file of python/tapml");
        for (rel, body) in FILES {
            let on_disk = std::fs::read(root.join(rel)).expect("read");
            assert!(on_disk == *body, "{rel}: the embedded copy differs from python/{rel}");
        }
    }

    #[test]
    fn install_writes_every_file_and_a_failure_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("python");
        install(&target).expect("install");
        for (rel, body) in FILES {
            assert_eq!(std::fs::read(target.join(rel)).expect("read"), *body);
        }
        // A file where the package directory must go: the install fails and leaves nothing.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).expect("mkdir");
        std::fs::write(blocked.join("tapml"), b"not a directory").expect("write");
        assert!(install(&blocked).is_err());
        assert!(!blocked.exists(), "a failed install removes what it wrote");
    }

    #[test]
    fn python_path_puts_taps_copy_first() {
        let d = Path::new("/r/python");
        assert_eq!(python_path(d, None), "/r/python");
        assert_eq!(python_path(d, Some("".as_ref())), "/r/python");
        assert_eq!(python_path(d, Some("/a:/b".as_ref())), "/r/python:/a:/b");
    }
}
