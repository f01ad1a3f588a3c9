//! Tidemark's domain values, with no I/O: the validated [`Sample`] and the rules every
//! input path shares, series identity and partitioning, hourly [`Bucket`] arithmetic,
//! instants and durations, and [`Secret`](secret::Secret) values that never print.

pub mod bucket;
pub mod sample;
pub mod secret;
pub mod series;
pub mod time;
pub mod window;

pub use bucket::Bucket;
pub use sample::Sample;
pub use window::RollingWindow;
