//! `postern serve`.
