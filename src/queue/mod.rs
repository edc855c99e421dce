//! Durable message queue.
