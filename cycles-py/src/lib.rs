//! Placeholder: the py binding is built in its own issue.
