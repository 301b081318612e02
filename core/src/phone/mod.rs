//! The phone: the tokio driver around the sans-IO endpoint, and the facade.
