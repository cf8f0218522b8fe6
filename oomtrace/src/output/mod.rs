//! Output: what people and programs read. The table ([`table`]), filters ([`filter`]), the
//! agent's Prometheus metrics ([`metrics`]) and their HTTP endpoint ([`http`]), and the
//! rotating JSON Lines file ([`rotate`]).
pub mod filter;
pub mod http;
pub mod metrics;
pub mod rotate;
pub mod table;
