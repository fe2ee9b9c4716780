//! The wsauth end-to-end harness: real parts, private to each test.
//! - [`TestRedis`]: a `redis-server` child on a free port (never 6379).
#![forbid(unsafe_code)]

mod redis;

pub use redis::{TestRedis, free_port};
