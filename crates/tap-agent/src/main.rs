fn main() -> std::process::ExitCode {
    tap_agent::main_with(tap_agent::cli::Cli::parse_args())
}
