//! The mistakes `#[derive(Header)]` turns into compile errors, each with
//! the message a developer sees (tests/ui/*.stderr).

#[test]
fn compile_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
