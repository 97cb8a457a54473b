//! Approval files, as an approver or a requester reads one someone else wrote: any
//! text gives a request or an error, never a panic; a request that reads back writes
//! out to text that reads as the same request, and its plain-words review is one
//! the terminal shows as it is (no control characters, nothing that reorders or hides
//! text).
#![no_main]

use cmdchan::approval::ApprovalFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(file) = ApprovalFile::parse(text) {
        assert_eq!(ApprovalFile::parse(&file.to_text()).as_ref(), Ok(&file));
        let shown = file.describe();
        let hidden = |c: char| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
        };
        assert!(!shown.chars().any(hidden), "{shown:?}");
    }
});
