mod cli;
mod robust;
pub mod util;
mod worker;
