//! Expose PyO3's interpreter cfgs (e.g. `Py_GIL_DISABLED` for free-threaded
//! CPython) to this crate's own code.

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
