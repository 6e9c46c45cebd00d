//! `tap runs diff A B`: what differs between two runs — parameters, code, environment, tags
//! and final metrics. A pure function over the two records.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::runs::{Provenance, Run};

/// Where a difference is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    Params,
    Code,
    Environment,
    Tags,
    Metrics,
}

impl Section {
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Params => "params",
            Section::Code => "code",
            Section::Environment => "environment",
            Section::Tags => "tags",
            Section::Metrics => "metrics",
        }
    }
}

/// One field that differs (None: the run has no such field).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub section: Section,
    pub field: String,
    pub a: Option<String>,
    pub b: Option<String>,
}

/// The fields of `p` that `diff` compares, by name.
fn provenance_fields(p: Option<&Provenance>) -> Vec<(Section, &'static str, Option<String>)> {
    let git = p.and_then(|p| p.git.as_ref());
    let py = p.and_then(|p| p.python.as_ref());
    let node = p.and_then(|p| p.node.as_ref());
    vec![
        (Section::Code, "git.commit", git.map(|g| g.commit.clone())),
        (Section::Code, "git.branch", git.and_then(|g| g.branch.clone())),
        (Section::Code, "git.dirty", git.map(|g| g.dirty.to_string())),
        (Section::Environment, "tap", p.map(|p| p.tap_version.clone())),
        (Section::Environment, "python", py.map(|p| p.version.clone())),
        (Section::Environment, "python.executable", py.map(|p| p.executable.clone())),
        (Section::Environment, "python.packages", py.map(|p| format!("{} ({})", p.packages_sha256, p.packages))),
        (Section::Environment, "node.instance_type", node.map(|n| n.instance_type.clone())),
        (Section::Environment, "node.ami", node.map(|n| n.ami_id.clone())),
        (Section::Environment, "node.availability_zone", node.map(|n| n.availability_zone.clone())),
    ]
}

fn maps<'a>(
    section: Section,
    a: &'a BTreeMap<String, String>,
    b: &'a BTreeMap<String, String>,
) -> impl Iterator<Item = Difference> + 'a {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).map(move |k| Difference {
        section,
        field: k.clone(),
        a: a.get(k).cloned(),
        b: b.get(k).cloned(),
    })
}

/// Every field that differs between `a` and `b`, by section, then field.
pub fn diff(a: &Run, b: &Run) -> Vec<Difference> {
    let params =
        |r: &Run| -> BTreeMap<String, String> { r.hparams.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect() };
    let metrics = |r: &Run| -> BTreeMap<String, String> {
        r.final_metrics.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()
    };
    let (pa, pb, ma, mb) = (params(a), params(b), metrics(a), metrics(b));
    let mut out: Vec<Difference> = maps(Section::Params, &pa, &pb).collect();
    let (fa, fb) = (provenance_fields(a.provenance.as_ref()), provenance_fields(b.provenance.as_ref()));
    for ((section, field, va), (_, _, vb)) in fa.into_iter().zip(fb) {
        if va != vb {
            out.push(Difference { section, field: field.to_owned(), a: va, b: vb });
        }
    }
    out.extend(maps(Section::Tags, &a.tags, &b.tags));
    out.extend(maps(Section::Metrics, &ma, &mb));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::{GitState, HparamUse, ParamSource, PythonEnv};

    fn run(id: &str, lr: &str, commit: &str, dirty: bool, loss: f64) -> Run {
        let mut r = Run::new("e", id, vec!["python3".into()], "h", 1);
        r.hparams.insert("lr".into(), HparamUse { value: lr.into(), version: 1, source: ParamSource::Default });
        r.hparams.insert("batch".into(), HparamUse { value: "32".into(), version: 1, source: ParamSource::Default });
        r.final_metrics.insert("loss".into(), loss);
        r.provenance = Some(Provenance {
            tap_version: "0.9.0".into(),
            git: Some(GitState { commit: commit.into(), branch: Some("main".into()), dirty }),
            python: Some(PythonEnv {
                version: "3.11.7".into(),
                executable: "/usr/bin/python3".into(),
                packages_sha256: "ab".repeat(32),
                packages: 120,
            }),
            node: None,
        });
        r
    }

    #[test]
    fn only_what_differs_is_shown() {
        let a = run("a", "0.1", "1111", false, 0.5);
        let mut b = run("b", "0.01", "2222", true, 0.25);
        b.tags.insert("team".into(), "nlp".into());
        let d = diff(&a, &b);
        let fields: Vec<(Section, &str)> = d.iter().map(|x| (x.section, x.field.as_str())).collect();
        assert_eq!(
            fields,
            [
                (Section::Params, "lr"),
                (Section::Code, "git.commit"),
                (Section::Code, "git.dirty"),
                (Section::Tags, "team"),
                (Section::Metrics, "loss")
            ]
        );
        assert_eq!((d[0].a.as_deref(), d[0].b.as_deref()), (Some("0.1"), Some("0.01")));
        assert_eq!((d[3].a.as_deref(), d[3].b.as_deref()), (None, Some("nlp")));
        assert!(diff(&a, &a).is_empty());
    }
}
