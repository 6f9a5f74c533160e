//! One module per subcommand.

pub mod bench;
pub mod ctl;
pub mod images;
pub mod incoming;
pub mod run;
