//! tap's own configuration file: the imported stack (`tap stack import`), if any.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tap_core::stack_config::StackConfig;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapConfig {
    /// The stack whose table, parameters, bucket and log group tap uses.
    pub stack: Option<StackConfig>,
}

/// `--config`, else `$TAP_CONFIG` (clap reads both), else `$XDG_CONFIG_HOME/tap/config.toml`,
/// else `~/.config/tap/config.toml`.
pub fn path(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p);
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("tap/config.toml"));
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty()).context("neither TAP_CONFIG nor HOME is set")?;
    Ok(PathBuf::from(home).join(".config/tap/config.toml"))
}

/// The configuration; a missing file is the embedded default (no stack).
pub fn load(path: &Path) -> anyhow::Result<TapConfig> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let c: TapConfig = toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), tap_core::text::toml_error(&text, &e)))?;
            if let Some(s) = &c.stack {
                s.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            }
            Ok(c)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TapConfig::default()),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// Writes atomically (temporary file, then rename): a crash leaves the old file or the new.
pub fn save(path: &Path, c: &TapConfig) -> anyhow::Result<()> {
    let dir = path.parent().context("config path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = toml::to_string_pretty(c).context("serialising the config")?;
    tap_core::fsutil::write_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_the_local_default_and_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("tap/config.toml");
        assert_eq!(load(&p).expect("default"), TapConfig::default());
        let stack: StackConfig =
            serde_json::from_str(include_str!("../tests/fixtures/tap_config.json")).expect("fixture");
        let c = TapConfig { stack: Some(stack) };
        save(&p, &c).expect("save");
        assert_eq!(load(&p).expect("load"), c);
    }

    #[test]
    fn bad_file_names_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "[stak]\n").expect("write");
        let e = load(&p).expect_err("bad").to_string();
        assert!(e.contains("config.toml") && e.contains("stak"), "{e}");
        // Regression: toml's diagnostic took five lines; tap's rule is one.
        assert_eq!(e, format!("{}: line 1, column 2: unknown field `stak`, expected `stack`", p.display()));
    }
}
