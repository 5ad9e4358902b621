mod cli;
mod produce;
mod robust;
pub mod util;
mod worker;
