//! `tap completions SHELL` and `tap man`: what a shell and `man` need, generated from tap's
//! own clap definition ([`Cli::definition`]), so they never drift from the flags tap parses.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::cli::Cli;

/// The name completions and man pages are made for (the installed binary's).
const BIN: &str = "tap";

pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut cmd = Cli::definition();
    // Into memory first: clap_complete panics on a failed write (`tap completions bash | head`),
    // and tap's own write error ends quietly on a closed pipe.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut script);
    out.write_all(&script)?;
    Ok(())
}

/// tap.1 to `out`, or, with `dir`, tap.1 and one page per command (`tap-runs-list.1`), the
/// way git and cargo ship theirs.
pub fn man(dir: Option<&Path>, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut cmd = Cli::definition();
    // Building names every subcommand for its page ("tap-runs-list").
    cmd.build();
    let Some(dir) = dir else {
        return clap_mangen::Man::new(cmd).render(out).context("writing the man page");
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = 0usize;
    write_pages(&cmd, dir, &mut written)?;
    writeln!(out, "wrote {written} pages to {}", dir.display())?;
    Ok(())
}

fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut usize) -> anyhow::Result<()> {
    let name = page_name(cmd);
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).title(&name).render(&mut page).context("rendering a man page")?;
    let path = dir.join(format!("{name}.1"));
    tap_core::fsutil::write_atomic(&path, &page).with_context(|| format!("writing {}", path.display()))?;
    *written += 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

/// `tap`, `tap-runs`, `tap-runs-list`: clap's display name once built, else the plain name.
fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_completions_naming_every_command() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut out).expect("completions");
            let text = String::from_utf8(out).expect("utf-8");
            for word in ["run", "runs", "checkpoints", "artifacts", "gc", "experiment", "resume"] {
                assert!(text.contains(word), "{shell}: completions lack {word}");
            }
        }
    }

    #[test]
    fn the_man_page_and_one_page_per_command() {
        let mut out = Vec::new();
        man(None, &mut out).expect("man");
        let page = String::from_utf8(out).expect("utf-8");
        assert!(page.starts_with(".ie"), "roff: {}", &page[..page.len().min(80)]);
        assert!(page.contains(".TH tap 1"), "{}", &page[..page.len().min(300)]);
        assert!(page.contains("tap\\-runs"), "the command list names tap runs");

        let dir = tempfile::tempdir().expect("tempdir");
        let mut said = Vec::new();
        man(Some(dir.path()), &mut said).expect("man --dir");
        for name in ["tap.1", "tap-run.1", "tap-runs.1", "tap-runs-list.1", "tap-checkpoints-pull.1", "tap-gc.1"] {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(text.contains(".SH NAME"), "{name}");
        }
        let run = std::fs::read_to_string(dir.path().join("tap-run.1")).expect("tap-run.1");
        assert!(run.contains("\\-\\-resume"), "tap-run.1 documents --resume");
    }
}
