//! The `salvor` binary: parse arguments, run, map the outcome to an exit code.

fn main() {
    std::process::exit(salvor::cli::main());
}
