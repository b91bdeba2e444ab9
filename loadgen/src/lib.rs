//! The load generator as a library: the open-loop goose run ([`attack`]), the job mix
//! ([`mix`]), the report ([`report`]) and the targets it can boot ([`target`]). The `loadgen`
//! binary and the chaos scenarios drive it.

pub mod attack;
pub mod mix;
pub mod report;
pub mod target;
