//! Gives the shared library the SONAME its installed name has (`libbips.so.0`),
//! so programs linked with `-lbips` record `libbips.so.0` as their dependency.

fn main() {
    // Without this, any file in bindings/c (the C tests, the header) would
    // rerun the script and rebuild the crate.
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "android" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libbips.so.0");
    }
}
