//! Non-INVITE transactions (RFC 3261 §17).
