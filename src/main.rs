//! The `vit-convert` command line. Wiring only: the work happens in the library.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
