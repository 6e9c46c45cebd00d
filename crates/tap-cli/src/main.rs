fn main() -> std::process::ExitCode {
    tap_cli::main_with(tap_cli::cli::Cli::parse_args())
}
