//! Placeholder: the node binding is built in its own issue.
