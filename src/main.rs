//! The `sshprobe` binary: command-line parsing and error reporting over the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
