mod cli;
mod util;
mod worker;
