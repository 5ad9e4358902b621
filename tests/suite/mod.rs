mod cli;
mod produce;
mod robust;
mod topology;
pub mod util;
mod worker;
