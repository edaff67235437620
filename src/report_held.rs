//! NOTICE, WARNING and LOG messages from Rust code, with a cancel never skipping Rust's drops.
//!
//! PostgreSQL's `errfinish` ends every report below ERROR with CHECK_FOR_INTERRUPTS, and pgrx
//! 0.18's `notice!`/`warning!`/`log!` call it without the FFI guard that turns PostgreSQL's
//! longjmp into a Rust panic. A cancel or statement timeout that arrives while a message is sent
//! therefore jumped straight to PostgreSQL's error handler, past every Rust frame: no destructor
//! ran (a training run's progress file stayed behind; a model loaded in that statement would
//! leak). [`held`] sends the message with interrupts held off, then checks for them through the
//! guard, so that a pending cancel unwinds the Rust frames like any other error.

use pgrx::pg_sys;

struct HoldInterrupts;

impl HoldInterrupts {
    fn new() -> HoldInterrupts {
        unsafe { pg_sys::InterruptHoldoffCount += 1 };
        HoldInterrupts
    }
}

impl Drop for HoldInterrupts {
    fn drop(&mut self) {
        unsafe { pg_sys::InterruptHoldoffCount -= 1 };
    }
}

/// Runs `report` (a `notice!`, `warning!`, `log!` or `ErrorReport::report` below ERROR) with
/// interrupts held, then processes a pending interrupt as a Rust panic.
pub fn held<T>(report: impl FnOnce() -> T) -> T {
    let out = {
        let _hold = HoldInterrupts::new();
        report()
    };
    pgrx::check_for_interrupts!();
    out
}
