//! One module per subcommand.

pub mod bench;
pub mod images;
pub mod run;
