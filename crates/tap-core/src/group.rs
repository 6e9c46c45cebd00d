//! A job run by hand: `tap run --group G --rank R --world-size N -- …` on each node. The
//! group is one run of the run model — the record `G`, with one attempt per (re)launch —
//! beside one node run per rank and attempt, as a managed job's (`tap launch`) is; its
//! [`Job`] record has no fleet ([`BY_HAND`]). Which attempt a starting rank belongs to is
//! decided here, from the group's record alone: it joins the newest attempt when its rank's
//! slot there is free, and begins the next one when `--resume` finds the slot taken (the
//! first rank to resume begins it; the others join it). Everything here is pure: the caller
//! applies it inside the store's conditional update, so two ranks starting at once see each
//! other.

use crate::runs::{AttemptStart, Job, JobNode, Run, RunStatus};
use crate::shards::MAX_WORLD_SIZE;

/// `Job::fleet_id` of a group run by hand (no fleet relaunches it; `--resume` does).
pub const BY_HAND: &str = "";

/// Which rank of which group this `tap run` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub group: String,
    pub rank: u32,
    pub world_size: u32,
}

impl Member {
    /// A member, checked: `rank` < `world_size` ≤ [`MAX_WORLD_SIZE`].
    pub fn new(group: &str, rank: u32, world_size: u32) -> Result<Member, String> {
        if world_size == 0 || world_size > MAX_WORLD_SIZE {
            return Err(format!("--world-size {world_size}: a group has 1 to {MAX_WORLD_SIZE} ranks"));
        }
        if rank >= world_size {
            return Err(format!(
                "--rank {rank} is not a rank of a world of {world_size} (ranks are 0 to {})",
                world_size - 1
            ));
        }
        Ok(Member { group: group.to_owned(), rank, world_size })
    }
}

/// Where a starting rank goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// The group has no record yet: create it, attempt 1.
    Create,
    /// Join attempt `n`: this rank's slot in it is free.
    Attempt(u32),
    /// Begin attempt `n` (the newest one has this rank already, or another world size).
    Begin(u32),
}

impl Join {
    pub fn attempt(self) -> u32 {
        match self {
            Join::Create => 1,
            Join::Attempt(n) | Join::Begin(n) => n,
        }
    }
}

/// Where rank `m.rank` goes in the group whose record is `record` (None: no record yet);
/// `resume`: `--resume` was given. Refusals are one line with the fix.
pub fn join(record: Option<&Run>, m: &Member, resume: bool) -> Result<Join, String> {
    let g = &m.group;
    let Some(record) = record else {
        return if resume {
            Err(format!("--resume {g}: the experiment has no group {g}; start it without --resume"))
        } else {
            Ok(Join::Create)
        };
    };
    let Some(job) = record.job.as_ref() else {
        return Err(format!(
            "{g} is a run of this experiment, not a group; choose another --group (or continue that run with --resume {g} without --group)"
        ));
    };
    if job.fleet_id != BY_HAND {
        return Err(format!(
            "{g} is a managed job on fleet {}: its ranks are started by the fleet (tap jobs show {g})",
            job.fleet_id
        ));
    }
    let n = job.attempt;
    let world = job.nodes.len() as u32;
    let slot = job.nodes.iter().find(|s| s.rank == m.rank);
    let free = slot.is_some_and(|s| s.run_id.is_none());
    // The attempt is alive while a rank that joined it has not ended.
    let joined = job.nodes.iter().any(|s| s.run_id.is_some());
    let alive = job.nodes.iter().any(|s| s.run_id.is_some() && !s.status.is_final());
    if world != m.world_size {
        // Another size begins the next attempt on --resume, unless the newest attempt is still
        // forming (some of its ranks have not started, others run): then this rank is one of
        // them, late, with the wrong size.
        let forming = job.nodes.iter().any(|s| s.run_id.is_none()) && alive;
        return if resume && !forming {
            Ok(Join::Begin(n + 1))
        } else {
            Err(format!(
                "group {g} runs {world} ranks (attempt {n}) and this rank says --world-size {}: start every rank with the same --world-size (another size: --resume {g} on every rank once this attempt's ranks all started or ended)",
                m.world_size
            ))
        };
    }
    if free {
        // A resume does not join an attempt whose ranks all ended: it begins the next one.
        return Ok(if resume && joined && !alive { Join::Begin(n + 1) } else { Join::Attempt(n) });
    }
    if resume {
        return Ok(Join::Begin(n + 1));
    }
    let who = slot.and_then(|s| s.run_id.as_deref()).unwrap_or("another run");
    Err(format!(
        "rank {} of group {g} already ran in attempt {n} ({who}); continue the group with --resume {g} on every rank",
        m.rank
    ))
}

/// The group's record as `join` decided, for node run `node_run` on `start`'s host: created
/// (with `hparams` and `command`), or with the rank's slot taken in the attempt joined or
/// begun. Applied inside the store's conditional update; a decision the record no longer
/// allows changes nothing (the caller sees its slot is not taken).
pub fn apply(record: &mut Run, decided: Join, m: &Member, node_run: &str, start: &AttemptStart) {
    let Some(job) = record.job.as_mut() else { return };
    if let Join::Begin(n) = decided {
        if job.attempt + 1 != n {
            return;
        }
        let ended_as = job.status();
        job.attempt = n;
        job.stop = None;
        job.nodes = slots(m.world_size);
        // The run's own attempt record follows (it does not read the job's slots).
        record.begin_attempt(ended_as, start.clone());
    }
    let Some(job) = record.job.as_mut() else { return };
    if job.attempt != decided.attempt() {
        return;
    }
    let Some(slot) = job.nodes.iter_mut().find(|s| s.rank == m.rank && s.run_id.is_none()) else { return };
    slot.run_id = Some(node_run.to_owned());
    slot.instance_id = start.instance_id.clone().unwrap_or_else(|| start.host.clone());
    slot.status = RunStatus::Running;
    record.status = job.status();
    record.ended_ms = None;
}

/// The record of a new group, attempt 1, with rank `m.rank`'s slot taken by `node_run`.
pub fn new_record(base: Run, m: &Member, node_run: &str, start: &AttemptStart) -> Run {
    let mut record = Run {
        job: Some(Job { fleet_id: BY_HAND.to_owned(), attempt: 1, nodes: slots(m.world_size), stop: None }),
        ..base
    };
    apply(&mut record, Join::Create, m, node_run, start);
    record
}

/// Whether node run `node_run` holds rank `rank`'s slot in the group's attempt `attempt`.
pub fn holds(record: &Run, attempt: u32, rank: u32, node_run: &str) -> bool {
    record.job.as_ref().is_some_and(|j| {
        j.attempt == attempt && j.nodes.iter().any(|s| s.rank == rank && s.run_id.as_deref() == Some(node_run))
    })
}

fn slots(world_size: u32) -> Vec<JobNode> {
    (0..world_size)
        .map(|rank| JobNode {
            rank,
            instance_id: String::new(),
            command_id: String::new(),
            run_id: None,
            status: RunStatus::Queued,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(host: &str) -> AttemptStart {
        AttemptStart {
            host: host.into(),
            instance_id: None,
            started_ms: 5,
            supervisor: None,
            node_rank: None,
            job_attempt: None,
        }
    }

    fn member(rank: u32, world: u32) -> Member {
        Member::new("g", rank, world).expect("valid")
    }

    /// Ranks `ranks` of a group of `world` joined attempt 1.
    fn group(world: u32, ranks: &[u32]) -> Run {
        let base = Run::new("e", "g", vec!["train".into()], "h", 1);
        let mut r = new_record(base, &member(ranks[0], world), &format!("n{}", ranks[0]), &start("h"));
        for &k in &ranks[1..] {
            let d = join(Some(&r), &member(k, world), false).expect("joins");
            apply(&mut r, d, &member(k, world), &format!("n{k}"), &start("h"));
        }
        r
    }

    #[test]
    fn ranks_join_the_first_attempt_and_a_rank_cannot_start_twice() {
        assert_eq!(join(None, &member(1, 3), false), Ok(Join::Create));
        let r = group(3, &[1, 0]);
        assert!(holds(&r, 1, 1, "n1") && holds(&r, 1, 0, "n0"));
        assert_eq!(r.status, RunStatus::Running);
        assert_eq!(join(Some(&r), &member(2, 3), false), Ok(Join::Attempt(1)));
        let e = join(Some(&r), &member(0, 3), false).expect_err("rank 0 is taken");
        assert!(e.contains("rank 0 of group g already ran in attempt 1 (n0)") && e.contains("--resume g"), "{e}");
        let e = join(None, &member(0, 3), true).expect_err("nothing to resume");
        assert!(e.contains("no group g"), "{e}");
    }

    #[test]
    fn the_first_rank_to_resume_begins_the_next_attempt_and_the_others_join_it() {
        let mut r = group(2, &[0, 1]);
        let d = join(Some(&r), &member(1, 2), true).expect("resumes");
        assert_eq!(d, Join::Begin(2));
        apply(&mut r, d, &member(1, 2), "m1", &start("h2"));
        assert_eq!(
            (r.attempt(), r.job.as_ref().map(|j| j.attempt)),
            (2, Some(2)),
            "one attempt of the run model per relaunch"
        );
        assert!(holds(&r, 2, 1, "m1") && !holds(&r, 2, 0, "n0"));
        assert_eq!(join(Some(&r), &member(0, 2), true), Ok(Join::Attempt(2)), "rank 0 joins attempt 2");
        // A decision made on an older record changes nothing: Begin(2) again is not begun twice.
        let before = r.clone();
        apply(&mut r, Join::Begin(2), &member(0, 2), "late", &start("h"));
        assert_eq!(r, before);
    }

    #[test]
    fn a_world_size_that_changes_between_attempts_needs_resume_and_every_rank_agreeing() {
        let r = group(2, &[0, 1]);
        let e = join(Some(&r), &member(0, 3), false).expect_err("another size");
        assert!(e.contains("runs 2 ranks") && e.contains("--world-size 3"), "{e}");
        assert_eq!(join(Some(&r), &member(0, 3), true), Ok(Join::Begin(2)));
        let mut r = r;
        apply(&mut r, Join::Begin(2), &member(0, 3), "m0", &start("h"));
        assert_eq!(r.job.as_ref().map(|j| j.nodes.len()), Some(3));
        assert_eq!(join(Some(&r), &member(2, 3), true), Ok(Join::Attempt(2)));
        let e = join(Some(&r), &member(1, 2), true).expect_err("one rank late, with the old size");
        assert!(e.contains("runs 3 ranks (attempt 2)"), "{e}");
        // Once the ranks that joined it ended, the attempt is over: a resume begins the next,
        // with any size, and does not join its free slots.
        r.job.as_mut().expect("job").nodes[0].status = RunStatus::Failed;
        assert_eq!(join(Some(&r), &member(1, 2), true), Ok(Join::Begin(3)));
        assert_eq!(join(Some(&r), &member(1, 3), true), Ok(Join::Begin(3)));
        assert_eq!(join(Some(&r), &member(1, 3), false), Ok(Join::Attempt(2)), "a fresh start fills attempt 1's way");
    }

    #[test]
    fn a_plain_run_or_a_managed_job_is_not_a_group_to_join() {
        let plain = Run::new("e", "g", vec![], "h", 1);
        assert!(join(Some(&plain), &member(0, 2), false).expect_err("plain").contains("not a group"));
        let mut managed = group(2, &[0]);
        managed.job.as_mut().expect("job").fleet_id = "fleet-1".into();
        assert!(
            join(Some(&managed), &member(1, 2), false).expect_err("managed").contains("managed job on fleet fleet-1")
        );
        assert!(Member::new("g", 2, 2).expect_err("rank 2 of 2").contains("ranks are 0 to 1"));
        assert!(Member::new("g", 0, 0).is_err());
    }
}
