mod chaos;
mod cli;
mod produce;
mod robust;
mod sasl;
mod topology;
pub mod util;
mod worker;
