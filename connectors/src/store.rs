//! Case store: SQLite (embedded default) and PostgreSQL (being written).
