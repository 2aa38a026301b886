//! Webhook sink (being written).
