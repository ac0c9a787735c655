//! meshgate policy core.
pub mod apikey;
mod hex;
