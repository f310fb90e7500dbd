//! T2 through the C ABI: `bips_consumer_options_trust_owner` /
//! `_trust_any_owner` and `bips_options_trust_owner` / `_trust_any_owner`.
//!
//! Another user's channel is simulated by giving the object to uid 65534
//! (`chown`, so root only; skipped otherwise): the owner check reads the
//! object's `st_uid`, whoever made it.

mod common;

use std::ffi::CStr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::ptr::{null, null_mut};

use bips_c::*;
use common::*;

const OTHER: u32 = 65534;

fn path(n: &CStr) -> PathBuf {
    PathBuf::from(format!("/dev/shm/bips.{}", n.to_str().unwrap()))
}

fn consumer_options() -> bips_consumer_options {
    let mut o = std::mem::MaybeUninit::<bips_consumer_options>::zeroed();
    // SAFETY: a writable bips_consumer_options of exactly this size.
    let st = unsafe {
        bips_consumer_options_init(o.as_mut_ptr(), std::mem::size_of::<bips_consumer_options>())
    };
    assert_eq!(st, BIPS_OK);
    // SAFETY: initialised by bips_consumer_options_init.
    unsafe { o.assume_init() }
}

fn trust_owner(o: &mut bips_consumer_options, uid: u32) -> bips_status {
    // SAFETY: `o` is a whole bips_consumer_options filled by
    // bips_consumer_options_init (see `consumer_options`).
    unsafe { bips_consumer_options_trust_owner(o, uid) }
}

/// Gives `n`'s object to `OTHER`; false (skip) when not allowed (not root).
fn give_away(n: &CStr) -> bool {
    match std::os::unix::fs::chown(path(n), Some(OTHER), Some(OTHER)) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("SKIPPED: needs root to chown a channel to uid {OTHER}");
            false
        }
        Err(e) => panic!("chown: {e}"),
    }
}

fn try_open(n: &CStr, o: Option<&bips_consumer_options>) -> bips_status {
    let mut c = null_mut();
    let opts = o.map_or(null(), |o| o as *const _);
    // SAFETY: valid name, options (or NULL) and out-pointer.
    let st = unsafe { bips_consumer_open(n.as_ptr(), opts, &mut c) };
    if st == BIPS_OK {
        // SAFETY: a live handle from bips_consumer_open.
        assert_eq!(unsafe { bips_consumer_destroy(c) }, BIPS_OK);
    } else {
        assert!(c.is_null());
    }
    st
}

#[test]
fn consumer_trusts_only_its_uid_unless_told() {
    let n = name("owner-consumer");
    let p = create(&n, 2);
    if !give_away(&n) {
        // SAFETY: live handle.
        unsafe { bips_producer_destroy(p) };
        return;
    }
    // Default (NULL options, and default options): refused, saying why.
    assert_eq!(try_open(&n, None), BIPS_E_PERMISSION);
    let msg = last_error();
    assert!(
        msg.contains("owned by uid 65534")
            && msg.contains("bips_consumer_options_trust_owner(opts, 65534)"),
        "{msg}"
    );
    let mut o = consumer_options();
    assert_eq!(try_open(&n, Some(&o)), BIPS_E_PERMISSION);
    // Another uid trusted: still refused.
    assert_eq!(trust_owner(&mut o, 1234), BIPS_OK);
    assert_eq!(try_open(&n, Some(&o)), BIPS_E_PERMISSION);
    // The owner trusted: opens.
    assert_eq!(trust_owner(&mut o, OTHER), BIPS_OK);
    assert_eq!((o.trusted_uid_count, o.trusted_uids[1]), (2, OTHER));
    assert_eq!(try_open(&n, Some(&o)), BIPS_OK, "{}", last_error());
    // Any owner trusted: opens.
    let mut any = consumer_options();
    // SAFETY: `any` was filled by bips_consumer_options_init.
    let st = unsafe { bips_consumer_options_trust_any_owner(&mut any) };
    assert_eq!(st, BIPS_OK);
    assert_eq!(any.trust_any_owner, 1);
    assert_eq!(try_open(&n, Some(&any)), BIPS_OK, "{}", last_error());
    // SAFETY: live handle.
    assert_eq!(unsafe { bips_producer_destroy(p) }, BIPS_OK);
    assert!(!path(&n).exists());
}

#[test]
fn producer_replaces_another_owners_stale_object_only_when_trusted() {
    let n = name("owner-producer");
    // A stale object of another user (no producer holds its lock).
    std::fs::write(path(&n), vec![0u8; 4096]).unwrap();
    if !give_away(&n) {
        let _ = std::fs::remove_file(path(&n));
        return;
    }
    let mut p = null_mut();
    let mut o = options(2, 64);
    // SAFETY: valid name, options and out-pointer.
    let st = unsafe { bips_producer_create(n.as_ptr(), &o, &mut p) };
    assert_eq!(st, BIPS_E_PERMISSION);
    assert!(
        last_error().contains("bips_options_trust_owner"),
        "{}",
        last_error()
    );
    assert_eq!(
        std::fs::metadata(path(&n)).unwrap().uid(),
        OTHER,
        "left alone"
    );
    // SAFETY: `o` was filled by bips_options_init; valid pointers after.
    unsafe {
        assert_eq!(bips_options_trust_owner(&mut o, OTHER), BIPS_OK);
        assert_eq!(
            bips_producer_create(n.as_ptr(), &o, &mut p),
            BIPS_OK,
            "{}",
            last_error()
        );
    }
    assert_ne!(
        std::fs::metadata(path(&n)).unwrap().uid(),
        OTHER,
        "replaced"
    );
    // SAFETY: live handle.
    assert_eq!(unsafe { bips_producer_destroy(p) }, BIPS_OK);
    assert!(!path(&n).exists());
}

#[test]
fn trust_setters_check_their_arguments() {
    // SAFETY: NULL is allowed and refused; the rest are filled structs.
    unsafe {
        assert_eq!(
            bips_options_trust_owner(null_mut(), 1),
            BIPS_E_INVALID_ARGUMENT
        );
        assert_eq!(
            bips_options_trust_any_owner(null_mut()),
            BIPS_E_INVALID_ARGUMENT
        );
        assert_eq!(
            bips_consumer_options_trust_owner(null_mut(), 1),
            BIPS_E_INVALID_ARGUMENT
        );
        assert_eq!(
            bips_consumer_options_trust_any_owner(null_mut()),
            BIPS_E_INVALID_ARGUMENT
        );
        let mut o = consumer_options();
        for uid in 0..BIPS_MAX_TRUSTED_UIDS {
            assert_eq!(
                bips_consumer_options_trust_owner(&mut o, 100 + uid),
                BIPS_OK
            );
        }
        // A uid already there: no-op; a ninth: refused, saying what to do.
        assert_eq!(bips_consumer_options_trust_owner(&mut o, 100), BIPS_OK);
        assert_eq!(o.trusted_uid_count, BIPS_MAX_TRUSTED_UIDS);
        assert_eq!(
            bips_consumer_options_trust_owner(&mut o, 7),
            BIPS_E_INVALID_ARGUMENT
        );
        assert!(last_error().contains("trust_any_owner"), "{}", last_error());
        // A struct from an older header (no trust fields): refused.
        let mut old = options(2, 64);
        old.struct_size = 56;
        assert_eq!(
            bips_options_trust_owner(&mut old, 1),
            BIPS_E_INVALID_ARGUMENT
        );
        assert!(last_error().contains("struct_size"), "{}", last_error());
        // Fields set by hand are checked when used.
        let n = name("owner-bad-fields");
        let mut c = null_mut();
        let mut bad = consumer_options();
        bad.trusted_uid_count = BIPS_MAX_TRUSTED_UIDS + 1;
        assert_eq!(
            bips_consumer_open(n.as_ptr(), &bad, &mut c),
            BIPS_E_INVALID_ARGUMENT
        );
        let mut bad = consumer_options();
        bad.trust_any_owner = 2;
        assert_eq!(
            bips_consumer_open(n.as_ptr(), &bad, &mut c),
            BIPS_E_INVALID_ARGUMENT
        );
        assert!(c.is_null());
    }
}
