//! The command lines of `tap` and `tap-agent` as clap parses them, the same way for both:
//! negative numbers are values, empty environment variables count as unset, and a bad value
//! from the environment is blamed on the variable (issue 23: each fixed for every option of
//! both binaries at once, not flag by flag).

/// `cmd` with every option that takes a value taking a negative number as that value (so
/// `--concurrency -1` is refused for its value, not read as an unknown flag `-1` with a tip
/// that does not work), and every environment variable that stands for an option and is set
/// but empty counting as unset, as a shell's `VAR=` means.
pub fn adjusted(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        let a = if a.get_action().takes_values() && !a.is_positional() { a.allow_negative_numbers(true) } else { a };
        let empty = a.get_env().is_some_and(|name| std::env::var_os(name).is_some_and(|v| v.is_empty()));
        if empty { a.env(None::<&str>) } else { a }
    })
    .mut_subcommands(adjusted)
}

/// Parses `args` (the program name first) with `cmd` ([`adjusted`]), blaming bad values from
/// the environment on their variable.
pub fn matches(cmd: &mut clap::Command, args: Vec<std::ffi::OsString>) -> Result<clap::ArgMatches, clap::Error> {
    cmd.try_get_matches_from_mut(args.clone()).map_err(|e| blame_environment(cmd, &args, e))
}

/// A bad value that came from an environment variable (`TAP_EXPERIMENT=" "`), not from the
/// command line, is blamed on the variable: clap names the flag, which the user never typed
/// (issue 23). Other errors pass unchanged.
pub fn blame_environment(cmd: &clap::Command, args: &[std::ffi::OsString], e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(e.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        return e;
    }
    let Some(ContextValue::String(shown)) = e.get(ContextKind::InvalidArg) else { return e };
    let Some(long) = shown.split([' ', '=']).next().and_then(|l| l.strip_prefix("--")) else { return e };
    fn find<'a>(cmd: &'a clap::Command, long: &str) -> Option<&'a clap::Arg> {
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(long) && a.get_env().is_some())
            .or_else(|| cmd.get_subcommands().find_map(|s| find(s, long)))
    }
    let Some(arg) = find(cmd, long) else { return e };
    let typed = args.iter().skip(1).filter_map(|a| a.to_str()).any(|a| {
        a == format!("--{long}")
            || a.starts_with(&format!("--{long}="))
            || arg.get_short().is_some_and(|s| a.starts_with(&format!("-{s}")) && !a.starts_with("--"))
    });
    let Some(var) = arg.get_env().and_then(|v| v.to_str()) else { return e };
    if typed {
        return e;
    }
    let value = std::env::var_os(var).unwrap_or_default();
    let why = match (std::error::Error::source(&e), e.get(ContextKind::ValidValue)) {
        (Some(source), _) => source.to_string(),
        (None, Some(ContextValue::Strings(valid))) => format!("it takes {}", valid.join(", ")),
        _ => "not a value it takes".to_owned(),
    };
    clap::Error::raw(
        ErrorKind::ValueValidation,
        format!("{var}={:?} in the environment (it stands for --{long}): {why}\n", value.to_string_lossy()),
    )
}
