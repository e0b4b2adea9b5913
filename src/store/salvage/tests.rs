//! Unit tests of salvage's helpers: key jumps of the table walks, the length a truncated
//! file's header gives.

use super::attempts::truncated_to;
use super::tables::advance;

#[test]
fn keys_advance_by_powers_of_two() {
    assert_eq!(advance([0u8; 4], 0), Some([0, 0, 0, 1]));
    assert_eq!(advance([0, 0, 0, 0xff], 0), Some([0, 0, 1, 0]));
    assert_eq!(advance([0u8; 4], 9), Some([0, 0, 2, 0]));
    assert_eq!(advance([0u8; 4], 31), Some([0x80, 0, 0, 0]));
    assert_eq!(advance([0xff; 4], 0), None);
    assert_eq!(advance([0u8; 4], 32), None);
}

#[test]
fn truncation_messages_give_the_stored_length() {
    assert_eq!(
        truncated_to("File truncated below stored layout: file_len=10, layout_len=4096"),
        Some(4096)
    );
    assert_eq!(truncated_to("something else"), None);
}
