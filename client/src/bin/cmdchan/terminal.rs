//! Text a server chose, made safe to print: a hostile server must not be able to drive
//! the operator's terminal (set its title, write its clipboard, move the cursor) or
//! forge a line (`\r` and an erase-line that paint over another server's result). Every
//! control character, invalid byte and direction override is shown as an escape instead.

use std::borrow::Cow;
use std::fmt::Write;

/// One line of text (an error message, a status, an argument): line breaks are escaped
/// too, so it stays one line.
pub fn line(text: &str) -> Cow<'_, str> {
    escape(text.as_bytes(), false)
}

/// Lines of text (a reply, a program's output on a terminal): `\n` and `\t` stay, every
/// other control is escaped; bytes that are not UTF-8 show as `\xHH`.
pub fn lines(bytes: &[u8]) -> Cow<'_, str> {
    escape(bytes, true)
}

fn escape(bytes: &[u8], keep_lines: bool) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if !text.chars().any(|c| unsafe_char(c, keep_lines)) {
            return Cow::Borrowed(text);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                _ if !unsafe_char(c, keep_lines) => out.push(c),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if u32::from(c) < 0x100 => {
                    let _ = write!(out, "\\x{:02x}", u32::from(c));
                }
                c => {
                    let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
                }
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// Controls (C0, DEL, C1), line and paragraph separators, and the marks that reorder
/// text on screen (bidirectional overrides and isolates).
fn unsafe_char(c: char, keep_lines: bool) -> bool {
    match c {
        '\n' | '\t' => !keep_lines,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' => true,
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        c => c.is_control(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_title_clipboard_and_line_forging_sequences() {
        let forged = "ok\r\x1b[Kweb02: exit 0\x1b]52;c;ZWNobyBoaQ==\x07\u{202e}";
        assert_eq!(
            line(forged),
            "ok\\r\\x1b[Kweb02: exit 0\\x1b]52;c;ZWNobyBoaQ==\\x07\\u{202e}"
        );
        assert_eq!(line("two\nlines"), "two\\nlines");
        assert_eq!(lines(b"two\nlines\tand\x9b"), "two\nlines\tand\\x9b");
        assert_eq!(lines("caf\u{e9} \u{85}".as_bytes()), "caf\u{e9} \\x85");
    }

    #[test]
    fn plain_text_is_borrowed_as_it_is() {
        assert!(matches!(line("plain text, ü"), Cow::Borrowed(_)));
        assert!(matches!(lines(b"a\nb\n"), Cow::Borrowed(_)));
    }
}
