//! Helpers of the Rust-side tests of the C ABI.
#![allow(dead_code, missing_docs)]

use std::ffi::{CStr, CString};

use bips_c::*;

pub fn name(tag: &str) -> CString {
    CString::new(format!("ctest-rs-{tag}-{}", std::process::id())).unwrap()
}

pub fn options(buffers: u32, size: u64) -> bips_options {
    let mut o = std::mem::MaybeUninit::<bips_options>::zeroed();
    // SAFETY: a writable bips_options of exactly this size.
    let st = unsafe { bips_options_init(o.as_mut_ptr(), std::mem::size_of::<bips_options>()) };
    assert_eq!(st, BIPS_OK);
    // SAFETY: initialised by bips_options_init.
    let mut o = unsafe { o.assume_init() };
    o.buffers = buffers;
    o.buffer_size = size;
    o.meta_size = 16;
    o
}

pub fn last_error() -> String {
    // SAFETY: bips_last_error_message returns a valid nul-terminated string.
    unsafe { CStr::from_ptr(bips_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

pub fn create(name: &CStr, buffers: u32) -> *mut bips_producer {
    let mut p = std::ptr::null_mut();
    let o = options(buffers, 4096);
    // SAFETY: valid name, options and out-pointer.
    let st = unsafe { bips_producer_create(name.as_ptr(), &o, &mut p) };
    assert_eq!(st, BIPS_OK, "{}", last_error());
    p
}

pub fn open(name: &CStr) -> *mut bips_consumer {
    let mut c = std::ptr::null_mut();
    // SAFETY: valid name and out-pointer; NULL options are allowed.
    let st = unsafe { bips_consumer_open(name.as_ptr(), std::ptr::null(), &mut c) };
    assert_eq!(st, BIPS_OK, "{}", last_error());
    c
}

pub fn zero_loan() -> bips_sample_mut {
    bips_sample_mut {
        owner: std::ptr::null_mut(),
        token: 0,
    }
}

pub fn zero_sample() -> bips_sample {
    bips_sample {
        owner: std::ptr::null_mut(),
        token: 0,
    }
}
