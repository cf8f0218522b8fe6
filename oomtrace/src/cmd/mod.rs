//! The subcommands: each holds its clap `Args` and a `run` that wires the stream to an output.
//! The only module that knows about the command line.
pub mod agent;
pub mod args;
pub mod check;
pub mod explain;
pub mod tail;
pub mod uninstall;
