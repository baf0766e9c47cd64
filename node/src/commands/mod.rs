//! One module per subcommand, each with an `execute` method.

pub mod build;
pub mod common;
pub mod compile_worker;
pub mod dashboard;
pub mod doctor;
pub mod domains;
pub mod exec;
pub mod job;
pub mod jobs;
pub mod ledger;
pub mod node;
pub mod owner;
pub mod peers;
pub mod publish;
pub mod refs;
pub mod status;
pub mod verify;
