//! Checkpoint manifests: the list of files of one checkpoint, with sizes and SHA-256 digests.
//!
//! A checkpoint is a manifest plus content-addressed objects; it becomes an experiment's
//! "latest" only after every object is stored and verified (the pointer is written last).
//! Manifests come back from storage, so parsing is strict: a corrupt or hostile manifest
//! (unknown version, `..` in a path, a malformed digest) is rejected with a reason.

use serde::{Deserialize, Serialize};

pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Relative path inside the checkpoint directory, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the content (also the object's key).
    pub sha256: String,
}

/// What a manifest describes: a run's checkpoint, or a version of an artifact (`tap artifacts`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestKind {
    /// Manifests written before there were kinds are checkpoints' or artifacts' by where they
    /// are stored; they read as this.
    #[default]
    Checkpoint,
    Artifact,
}

impl ManifestKind {
    fn is_checkpoint(&self) -> bool {
        *self == ManifestKind::Checkpoint
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    /// A checkpoint's (absent) or an artifact version's.
    #[serde(default, skip_serializing_if = "ManifestKind::is_checkpoint")]
    pub kind: ManifestKind,
    pub checkpoint_id: String,
    pub experiment_id: String,
    pub run_id: String,
    pub created_ms: i64,
    pub step: Option<u64>,
    pub files: Vec<ManifestFile>,
    /// Entries of the directory tap could not store (a link leaving it, a FIFO), left out
    /// while every other file was stored (regression: one such entry made tap refuse the whole
    /// checkpoint, and the run still ended `succeeded` with nothing stored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedEntry>,
}

/// An entry of a checkpoint or artifact directory that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkippedEntry {
    /// Relative path inside the directory, `/`-separated.
    pub path: String,
    pub why: String,
}

/// The most skipped entries a manifest records (the count beyond is said in the last one).
pub const MAX_SKIPPED_RECORDED: usize = 1000;

/// `2 entries (pw, pipe)`: what was left out, for one-line messages (None: nothing).
pub fn left_out_summary(entries: &[SkippedEntry]) -> Option<String> {
    let n = entries.len();
    if n == 0 {
        return None;
    }
    let names: Vec<&str> = entries.iter().take(5).map(|e| e.path.as_str()).collect();
    Some(format!(
        "{n} {} ({}{})",
        if n == 1 { "entry" } else { "entries" },
        names.join(", "),
        if n > 5 { ", ..." } else { "" }
    ))
}

/// `skipped` bounded to [`MAX_SKIPPED_RECORDED`] entries, sorted; what is beyond is counted in
/// a last entry.
pub fn bounded_skipped(mut skipped: Vec<SkippedEntry>) -> Vec<SkippedEntry> {
    skipped.sort();
    skipped.dedup();
    if skipped.len() > MAX_SKIPPED_RECORDED {
        let more = skipped.len() - (MAX_SKIPPED_RECORDED - 1);
        skipped.truncate(MAX_SKIPPED_RECORDED - 1);
        skipped.push(SkippedEntry { path: "...".into(), why: format!("{more} more entries left out") });
    }
    skipped
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt checkpoint manifest: {0}")]
pub struct ManifestError(pub String);

/// A relative path that stays inside its directory once joined to it.
pub fn safe_relative_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 1024
        && !p.starts_with('/')
        && !p.contains('\\')
        && !p.contains('\0')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A version of an artifact as people and scripts see it (`tap artifacts push|pull|list`): its
/// name and version, not the checkpoint fields its manifest shares with checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactVersion<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub created_ms: i64,
    pub bytes: u64,
    pub files: &'a [ManifestFile],
    #[serde(skip_serializing_if = "<[SkippedEntry]>::is_empty")]
    pub skipped: &'a [SkippedEntry],
}

impl<'a> From<&'a Manifest> for ArtifactVersion<'a> {
    fn from(m: &'a Manifest) -> ArtifactVersion<'a> {
        ArtifactVersion {
            name: &m.experiment_id,
            version: &m.checkpoint_id,
            created_ms: m.created_ms,
            bytes: m.total_bytes(),
            files: &m.files,
            skipped: &m.skipped,
        }
    }
}

impl Manifest {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, ManifestError> {
        serde_json::to_vec_pretty(self).map_err(|e| ManifestError(format!("checkpoint {}: {e}", self.checkpoint_id)))
    }

    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| ManifestError(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    pub fn validate(&self) -> Result<(), ManifestError> {
        let bad = |s: String| Err(ManifestError(s));
        if self.version != MANIFEST_VERSION {
            return bad(format!("version {} (this tap reads version {MANIFEST_VERSION})", self.version));
        }
        for (what, v) in
            [("checkpoint_id", &self.checkpoint_id), ("experiment_id", &self.experiment_id), ("run_id", &self.run_id)]
        {
            if !crate::runs::valid_id(v) {
                return bad(format!("{what} {v:?} is not a valid name"));
            }
        }
        if self.skipped.len() > MAX_SKIPPED_RECORDED {
            return bad(format!("{} skipped entries (at most {MAX_SKIPPED_RECORDED})", self.skipped.len()));
        }
        if let Some(e) = self.skipped.iter().find(|e| e.path.len() > 4096 || e.why.len() > 1024) {
            return bad(format!("a skipped entry over 4 KiB: {:?}", crate::text::clip(&e.path, 80)));
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.files {
            if !safe_relative_path(&f.path) {
                return bad(format!("unsafe file path {:?}", f.path));
            }
            if !is_sha256_hex(&f.sha256) {
                return bad(format!("{:?}: sha256 {:?} is not 64 lowercase hex digits", f.path, f.sha256));
            }
            if !seen.insert(f.path.as_str()) {
                return bad(format!("{:?} listed twice", f.path));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn manifest(files: Vec<ManifestFile>) -> Manifest {
        Manifest {
            version: 1,
            kind: ManifestKind::Checkpoint,
            checkpoint_id: "c-0001".into(),
            experiment_id: "mnist".into(),
            run_id: "20261127T013757Z-3f9a1c".into(),
            created_ms: 1,
            step: Some(100),
            files,
            skipped: vec![],
        }
    }

    fn file(path: &str) -> ManifestFile {
        ManifestFile { path: path.into(), size: 3, sha256: "ab".repeat(32) }
    }

    #[test]
    fn rejects_what_could_escape_or_lie() {
        for p in ["../etc/passwd", "/abs", "a/../../b", "a//b", "./a", "a\\b", ""] {
            let e = manifest(vec![file(p)]).validate().expect_err(p);
            assert!(e.0.contains("unsafe file path"), "{p}: {e}");
        }
        let mut f = file("model.pt");
        f.sha256 = "XYZ".into();
        assert!(manifest(vec![f]).validate().is_err());
        assert!(manifest(vec![file("a"), file("a")]).validate().expect_err("rejected").0.contains("twice"));
        let mut m = manifest(vec![]);
        m.version = 2;
        assert!(m.validate().expect_err("rejected").0.contains("version 2"));
        assert!(
            Manifest::parse(b"{\"version\":1}")
                .expect_err("rejected")
                .to_string()
                .starts_with("corrupt checkpoint manifest")
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&manifest(vec![file("a")]).to_bytes().expect("bytes")).expect("json");
        v["extra"] = serde_json::json!(1);
        assert!(Manifest::parse(v.to_string().as_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn round_trips(paths in proptest::collection::btree_set("[a-z0-9_]{1,8}(/[a-z0-9_.]{1,8}){0,3}", 0..20),
                       sizes in proptest::collection::vec(any::<u64>(), 20), step in proptest::option::of(any::<u64>())) {
            let files: Vec<ManifestFile> = paths.iter().zip(&sizes).map(|(p, s)| ManifestFile {
                path: p.clone(), size: *s, sha256: format!("{:064x}", s) }).filter(|f| safe_relative_path(&f.path)).collect();
            let mut m = manifest(files);
            m.step = step;
            prop_assert_eq!(Manifest::parse(&m.to_bytes().expect("bytes")).expect("valid"), m);
        }

        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Manifest::parse(&bytes);
        }
    }
}
