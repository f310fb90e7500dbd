//! The sealed memfd backend through the C ABI: `BIPS_FLAG_MEMFD` makes a
//! channel with no `/dev/shm` object, served from the socket directory; a C
//! consumer opens it by name as usual and reads the bytes in place.

mod common;

use std::ptr::null_mut;

use bips_c::*;
use common::*;

#[test]
fn bips_flag_memfd_serves_the_channel_from_the_socket_directory() {
    // The only test of this binary: no other thread reads the environment.
    let dir = std::env::temp_dir().join(format!("bips-c-memfd-{}", std::process::id()));
    std::env::set_var("BIPS_SOCKET_DIR", &dir);
    let n = name("memfd");
    let mut o = options(2, 4096);
    o.flags |= BIPS_FLAG_MEMFD;
    let mut p = null_mut();
    // SAFETY: (all calls below) valid names, options, out-pointers and live
    // handles; every loan and sample is handed back before its owner goes.
    unsafe {
        assert_eq!(
            bips_producer_create(n.as_ptr(), &o, &mut p),
            BIPS_OK,
            "{}",
            last_error()
        );
        let shm = format!("/dev/shm/bips.{}", n.to_str().unwrap());
        let sock = dir.join(format!("bips.{}.sock", n.to_str().unwrap()));
        assert!(!std::path::Path::new(&shm).exists(), "no /dev/shm object");
        assert!(sock.exists(), "served on {}", sock.display());
        let c = open(&n);
        let mut loan = zero_loan();
        assert_eq!(bips_producer_loan(p, -1, &mut loan), BIPS_OK);
        std::ptr::write_bytes(bips_sample_mut_data(loan).cast::<u8>(), 0x5A, 4096);
        let mut seq = 0;
        assert_eq!(bips_sample_mut_publish(&mut loan, &mut seq), BIPS_OK);
        let mut s = zero_sample();
        assert_eq!(
            bips_consumer_recv(c, 1_000_000_000, &mut s),
            BIPS_OK,
            "{}",
            last_error()
        );
        let bytes = std::slice::from_raw_parts(bips_sample_data(s).cast::<u8>(), 4096);
        assert!(bytes.iter().all(|&b| b == 0x5A));
        assert_eq!(bips_sample_release(&mut s), BIPS_OK);
        assert_eq!(bips_consumer_destroy(c), BIPS_OK);
        assert_eq!(bips_producer_destroy(p), BIPS_OK);
        assert!(!sock.exists(), "the producer removes its socket");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
