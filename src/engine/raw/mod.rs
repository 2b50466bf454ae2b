//! The raw engine: the identification exchange over raw sockets, with a user-space TCP client.

pub mod firewall;
pub mod tcp;
pub mod wire;
