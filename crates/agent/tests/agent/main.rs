//! The agent's network, proxy, DNS and volume code against the real kernel, one
//! binary; each test builds its own network namespaces and mounts and removes them.

mod dns;
mod network;
mod proxy;
mod volumes;
