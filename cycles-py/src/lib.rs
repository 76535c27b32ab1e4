//! `cycles._cycles`: the Python binding of [`cycles_core`], built with pyo3 and maturin.
//!
//! A thin layer: Python values become the core's request structs, every ledger call runs with
//! the GIL released, and results and errors are translated. The Pythonic helpers (the `guard`
//! decorator body, framework integrations) live in `python/cycles/`; no rule of the gate is
//! written in this crate or in Python.

mod authority;
mod convert;
mod errors;
mod types;

use pyo3::prelude::*;

/// The compiled module. Import `cycles`, not this.
#[pymodule]
fn _cycles(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<authority::Authority>()?;
    m.add_class::<authority::Reservation>()?;
    m.add_class::<types::Decision>()?;
    m.add_class::<types::Caps>()?;
    m.add_class::<types::Balance>()?;
    m.add_class::<types::CommitResult>()?;
    m.add_class::<types::ReleaseResult>()?;
    m.add_class::<types::EventResult>()?;
    m.add_class::<types::VerifyReport>()?;
    m.add_class::<types::AuditRecord>()?;
    m.add_class::<types::ManualClock>()?;
    errors::register(m)?;
    // Set as a plain attribute, not added: a private benchmark hook stays out of `__all__`.
    m.setattr("_bench_core", wrap_pyfunction!(authority::_bench_core, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
