mod cli;
pub mod util;
mod worker;
