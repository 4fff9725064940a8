//! zlib under libz-ng-sys's name.
//!
//! pingora-core asks flate2 for its `zlib-ng` back end, whose `libz-ng-sys`
//! builds zlib-ng with cmake. flate2 calls that crate through the same names
//! as `libz-sys` (`deflateInit2_`, `inflate`, `z_stream`, the `Z_*`
//! constants), so re-exporting libz-sys, which compiles its bundled zlib with
//! the `cc` crate, gives the same behaviour with only a C compiler.
#![no_std]

pub use libz_sys::*;
