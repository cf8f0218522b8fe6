//! Output: what people and programs read. The JSON Lines schema ([`schema`]), `explain`'s
//! reports ([`explain`]), the table
//! ([`table`]) and its filters ([`filter`]), the agent's Prometheus metrics ([`metrics`]) and
//! their HTTP endpoint ([`http`]), the rotating JSON Lines file ([`rotate`]), the queued
//! writer thread in front of each output ([`sink`]), and escaping of outside strings for the
//! terminal ([`terminal`]).
pub mod explain;
pub mod filter;
#[cfg(test)]
mod golden_tests;
pub mod http;
pub mod metrics;
pub mod rotate;
pub mod schema;
pub mod sink;
pub mod table;
pub mod terminal;
