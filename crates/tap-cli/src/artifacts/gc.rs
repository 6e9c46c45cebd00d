//! What `tap gc` and `tap runs delete` remove from the object store: a pure plan over what is
//! stored (manifests, pointers, objects), then the deletes.
//!
//! Checkpoints and artifacts are manifests over content-addressed objects shared between
//! them. A manifest stays while a policy keeps it (the newest N of its run or artifact, and
//! every one a LATEST pointer or a run record names); an object stays while a kept manifest
//! names it, or while it is younger than [`GRACE_MS`] (an upload in flight has written its
//! objects but not yet its manifest).

use std::collections::{BTreeMap, BTreeSet};

use tap_core::manifest::Manifest;

use super::ObjectInfo;

/// An object no manifest names is left alone this long: an upload writes its objects first
/// and its manifest last, and a checkpoint of hundreds of GB takes tens of minutes.
pub const GRACE_MS: i64 = 6 * 3600 * 1000;

/// One space's name (an experiment's checkpoints, or one artifact) as stored.
#[derive(Debug, Default)]
pub struct Stored {
    /// Manifests by key.
    pub manifests: Vec<(String, Manifest)>,
    /// A sharded job's shard manifests by key (tap_core::shards): never dropped by a plan (a
    /// job's steps go with its commits: orphans when a later step commits, all of them with
    /// `tap runs delete JOB`), but what they name stays.
    pub shards: Vec<(String, Manifest)>,
    /// Checkpoint (or version) ids something names: LATEST pointers, run records.
    pub named: BTreeSet<String>,
    pub objects: Vec<ObjectInfo>,
}

/// What to remove.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub manifests: Vec<String>,
    pub objects: Vec<ObjectInfo>,
}

impl Plan {
    pub fn bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }
}

/// The manifests beyond the newest `keep` of each owner (a run, or an artifact's versions:
/// `by` picks the owner) that nothing names; then every object that no remaining manifest names
/// and that is older than [`GRACE_MS`].
pub fn plan(stored: &Stored, keep: Option<usize>, by: fn(&Manifest) -> String, now_ms: i64) -> Plan {
    let mut owners: BTreeMap<String, Vec<&(String, Manifest)>> = BTreeMap::new();
    for m in &stored.manifests {
        owners.entry(by(&m.1)).or_default().push(m);
    }
    let mut drop: BTreeSet<&str> = BTreeSet::new();
    if let Some(keep) = keep {
        for list in owners.values_mut() {
            list.sort_by(|a, b| {
                b.1.created_ms.cmp(&a.1.created_ms).then_with(|| b.1.checkpoint_id.cmp(&a.1.checkpoint_id))
            });
            for (key, m) in list.iter().skip(keep) {
                if !stored.named.contains(&m.checkpoint_id) {
                    drop.insert(key.as_str());
                }
            }
        }
    }
    let mut plan = without(stored, &drop, now_ms);
    plan.manifests = drop.into_iter().map(str::to_owned).collect();
    plan
}

/// The objects of `stored` that no manifest or shard manifest outside `dropped` names: those
/// the dropped ones named, and those nothing names that are older than [`GRACE_MS`].
pub fn without(stored: &Stored, dropped: &BTreeSet<&str>, now_ms: i64) -> Plan {
    let shas = |keep: bool| -> BTreeSet<&str> {
        stored
            .manifests
            .iter()
            .chain(&stored.shards)
            .filter(|(k, _)| dropped.contains(k.as_str()) != keep)
            .flat_map(|(_, m)| m.files.iter().map(|f| f.sha256.as_str()))
            .collect()
    };
    let (referenced, orphaned) = (shas(true), shas(false));
    let objects = stored
        .objects
        .iter()
        .filter(|o| {
            // `<sha>.tapsum` (a multipart object's checksum sidecar) goes with its object.
            let name = o.key.rsplit('/').next().unwrap_or_default();
            let sha = name.split('.').next().unwrap_or_default();
            !referenced.contains(sha) && (orphaned.contains(sha) || now_ms - o.modified_ms >= GRACE_MS)
        })
        .cloned()
        .collect();
    Plan { manifests: Vec::new(), objects }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tap_core::manifest::{MANIFEST_VERSION, ManifestFile};

    fn manifest(run: &str, id: &str, created: i64, shas: &[&str]) -> (String, Manifest) {
        let m = Manifest {
            version: MANIFEST_VERSION,
            kind: tap_core::manifest::ManifestKind::Checkpoint,
            checkpoint_id: id.into(),
            experiment_id: "e".into(),
            run_id: run.into(),
            created_ms: created,
            step: None,
            files: shas
                .iter()
                .map(|s| ManifestFile { path: format!("{s}.bin"), size: 1, sha256: (*s).to_owned() })
                .collect(),
            skipped: vec![],
        };
        (format!("checkpoints/e/manifests/{id}.json"), m)
    }

    fn object(sha: &str, size: u64, modified_ms: i64) -> ObjectInfo {
        ObjectInfo { key: format!("checkpoints/e/objects/{sha}"), size, modified_ms }
    }

    fn run_of(m: &Manifest) -> String {
        m.run_id.clone()
    }

    #[test]
    fn the_newest_are_kept_with_what_is_named_and_shared_objects_stay() {
        let day = 24 * 3600 * 1000;
        let stored = Stored {
            shards: Vec::new(),
            manifests: vec![
                manifest("a", "a-1", 1, &["x", "old"]),
                manifest("a", "a-2", 2, &["x", "mid", "fresh-but-dropped"]),
                manifest("a", "a-3", 3, &["x", "new"]),
                manifest("b", "b-1", 1, &["gone-with-b1"]),
                manifest("b", "b-2", 2, &["b2"]),
            ],
            named: BTreeSet::from(["b-1".to_owned()]),
            objects: ["x", "old", "mid", "new", "gone-with-b1", "b2", "stray"]
                .iter()
                .map(|s| object(s, 10, 0))
                .chain([object("fresh-upload", 10, 10 * day - 1000), object("fresh-but-dropped", 10, 10 * day - 1000)])
                .chain([object("x.tapsum", 1, 0), object("old.tapsum", 1, 0)])
                .collect(),
        };
        let p = plan(&stored, Some(1), run_of, 10 * day);
        assert_eq!(p.manifests, ["checkpoints/e/manifests/a-1.json", "checkpoints/e/manifests/a-2.json"]);
        let gone: Vec<&str> = p.objects.iter().map(|o| o.key.rsplit('/').next().unwrap_or_default()).collect();
        assert_eq!(
            gone,
            ["old", "mid", "stray", "fresh-but-dropped", "old.tapsum"],
            "x (and its sidecar) is shared with a-3; b-1 is named; a fresh upload waits"
        );
        assert_eq!(p.bytes(), 41);
        let all = plan(&stored, None, run_of, 10 * day);
        assert!(all.manifests.is_empty());
        assert_eq!(all.objects.len(), 1, "without --keep-checkpoints only the stray object goes");
    }

    /// Regression (tap gc kept an experiment that held a sharded job's checkpoints whole: it
    /// did not follow shard manifests, so it could free nothing there): what a shard names
    /// stays through any --keep-checkpoints, shards are never dropped by the plan, and dropping
    /// a job's shards (tap runs delete JOB) frees what only they named.
    #[test]
    fn gc_follows_a_sharded_jobs_shards() {
        let day = 24 * 3600 * 1000;
        let (key0, shard0) = manifest("job", "job-a1-s0000000010-r0", 5, &["w0", "shared"]);
        let (key1, shard1) = manifest("job", "job-a1-s0000000010-r1", 5, &["w1", "shared"]);
        let stored = Stored {
            manifests: vec![manifest("a", "a-1", 1, &["old", "shared"]), manifest("a", "a-2", 2, &["new"])],
            shards: vec![(key0.replace("manifests", "shards"), shard0), (key1.replace("manifests", "shards"), shard1)],
            named: BTreeSet::new(),
            objects: ["old", "new", "shared", "w0", "w1", "stray"].iter().map(|s| object(s, 1, 0)).collect(),
        };
        let name = |p: &Plan| -> Vec<String> {
            p.objects.iter().map(|o| o.key.rsplit('/').next().unwrap_or_default().to_owned()).collect()
        };
        let p = plan(&stored, Some(1), run_of, 10 * day);
        assert_eq!(p.manifests, ["checkpoints/e/manifests/a-1.json"], "shards are never candidates");
        assert_eq!(name(&p), ["old", "stray"], "what a shard names stays, shared or not");
        let job: BTreeSet<&str> = stored.shards.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(name(&without(&stored, &job, 10 * day)), ["w0", "w1", "stray"], "shared is still a-1's");
    }
}
