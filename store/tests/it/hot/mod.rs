//! The hot copy in Redis: its writers and its reader.

mod publish;
mod read;
