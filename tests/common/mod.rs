//! Shared by the tests that run the binary.

use std::process::Command;

/// `lgms-edge` as a command. Under `make test-aarch64` the binary is an
/// aarch64 executable that this x86_64 host cannot exec directly (no
/// binfmt_misc here): `LGMS_TEST_RUNNER` (e.g. `qemu-aarch64-static -L /`,
/// what `.cargo/config.toml` uses for the test binaries) is put in front.
pub fn lgms_edge() -> Command {
    let bin = env!("CARGO_BIN_EXE_lgms-edge");
    let runner = std::env::var("LGMS_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(prog) => {
            let mut c = Command::new(prog);
            c.args(words).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}
