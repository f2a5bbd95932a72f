//! Compile tests of `#[service]`: what must compile (`ui/pass`) and what must be rejected
//! with the reviewed diagnostics in `ui/fail/*.stderr`.
//!
//! After a change to the diagnostics, regenerate with `TRYBUILD=overwrite` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
