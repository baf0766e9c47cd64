//! One module per subcommand, each with an `execute` method.

pub mod build;
pub mod compile_worker;
pub mod exec;
pub mod node;
pub mod verify;
