//! meshgate proxy-wasm filter.
