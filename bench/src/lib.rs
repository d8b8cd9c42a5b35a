//! What the benchmark shares with the project's tests.

pub mod ports;
pub mod webdriver;
