//! Approval files, as an approver or a requester reads one someone else wrote: any
//! text gives a request or an error, never a panic; a request that reads back writes
//! out to text that reads as the same request, and its plain-words review is one
//! the terminal shows as it is (no control characters).
#![no_main]

use cmdchan::approval::ApprovalFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(file) = ApprovalFile::parse(text) {
        assert_eq!(ApprovalFile::parse(&file.to_text()).as_ref(), Ok(&file));
        let shown = file.describe();
        assert!(!shown.chars().any(|c| c.is_control() && c != '\n'), "{shown:?}");
    }
});
