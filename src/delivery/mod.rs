//! Outbound delivery.
