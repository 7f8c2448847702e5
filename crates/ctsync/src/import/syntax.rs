//! conntrackd.conf's syntax, read by hand: words, `{ … }` blocks and `#` comments.
//!
//! conntrackd (1.4.7, `src/read_config_lex.l` and `read_config_yy.y`) reads a stream of
//! tokens; every file in practice writes one option per line (`Port 3780`), a section as
//! a name followed by a block (`UDP Default {`), and lists inside a block one item per
//! line or on the block's own line (`State Accept { ESTABLISHED for TCP }`). This reader
//! takes exactly that shape: a statement is the words of one line, and a `{` (on the
//! same line or the next) opens the block of the statement before it.
//!
//! It is total: any bytes give a tree or an [`Error`] with its line, never a panic
//! (tested over random bytes below).

use std::fmt;

/// How deep blocks may nest (conntrackd's deepest is 3: `General { Filter { Address
/// Ignore { … } } }`); deeper is refused rather than recursed into.
const MAX_DEPTH: usize = 8;

/// One statement: its words, the line it starts on, and its block if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    /// 1-based line of its first word.
    pub(crate) line: usize,
    /// Its words, as written (never empty).
    pub(crate) words: Vec<String>,
    /// The statements of its `{ … }` block.
    pub(crate) block: Option<Vec<Item>>,
}

impl Item {
    /// Its keyword (the first word).
    pub(crate) fn key(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }

    /// Whether its keyword is `k`, in any case.
    pub(crate) fn is(&self, k: &str) -> bool {
        self.key().eq_ignore_ascii_case(k)
    }

    /// Its words after the keyword.
    pub(crate) fn args(&self) -> &[String] {
        self.words.get(1..).unwrap_or(&[])
    }

    /// The statements of its block (none if it has no block).
    pub(crate) fn children(&self) -> &[Item] {
        self.block.as_deref().unwrap_or(&[])
    }

    /// The statement as written, on one line (`UDP Default { … }` for a section).
    pub(crate) fn text(&self) -> String {
        let words = self.words.join(" ");
        if self.block.is_some() {
            format!("{words} {{ … }}")
        } else {
            words
        }
    }
}

/// Why a file is not a conntrackd.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Error {
    /// 1-based line.
    pub(crate) line: usize,
    /// What was wrong there.
    pub(crate) what: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Open,
    Close,
    Newline,
}

/// Split the text into tokens with their lines. Only printable text is taken: a control
/// byte (a binary file, say) is an error at its line.
fn tokens(bytes: &[u8]) -> Result<Vec<(usize, Token)>, Error> {
    let text = std::str::from_utf8(bytes).map_err(|e| Error {
        line: bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1,
        what: "not UTF-8 text".to_string(),
    })?;
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let code = raw.split('#').next().unwrap_or("");
        if let Some(c) = raw
            .chars()
            .find(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\x0c'))
        {
            return Err(Error {
                line,
                what: format!("unexpected control character {:?}", c),
            });
        }
        let mut word = String::new();
        for c in code.chars() {
            if c == '{' || c == '}' || c.is_whitespace() {
                if !word.is_empty() {
                    out.push((line, Token::Word(std::mem::take(&mut word))));
                }
                match c {
                    '{' => out.push((line, Token::Open)),
                    '}' => out.push((line, Token::Close)),
                    _ => {}
                }
            } else {
                word.push(c);
            }
        }
        if !word.is_empty() {
            out.push((line, Token::Word(word)));
        }
        out.push((line, Token::Newline));
    }
    Ok(out)
}

/// Parse a conntrackd.conf into its top-level statements.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<Item>, Error> {
    let toks = tokens(bytes)?;
    let mut pos = 0;
    let items = block(&toks, &mut pos, None, 0)?;
    Ok(items)
}

/// Read statements until the `}` that closes `open` (the line and words of the statement
/// whose block this is), or the end for the top level.
fn block(
    toks: &[(usize, Token)],
    pos: &mut usize,
    open: Option<(usize, &str)>,
    depth: usize,
) -> Result<Vec<Item>, Error> {
    let mut items: Vec<Item> = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut start = 0;
    // Whether the last item ended at a newline and may still take a `{` on a later line.
    let mut may_open = false;
    while let Some((line, tok)) = toks.get(*pos) {
        let line = *line;
        *pos += 1;
        match tok {
            Token::Word(w) => {
                if words.is_empty() {
                    start = line;
                }
                words.push(w.clone());
                may_open = false;
            }
            Token::Newline => {
                if !words.is_empty() {
                    items.push(Item {
                        line: start,
                        words: std::mem::take(&mut words),
                        block: None,
                    });
                    may_open = true;
                }
            }
            Token::Open => {
                let mut head = if !words.is_empty() {
                    Item {
                        line: start,
                        words: std::mem::take(&mut words),
                        block: None,
                    }
                } else if may_open && let Some(prev) = items.pop() {
                    prev
                } else {
                    return Err(Error {
                        line,
                        what: "`{` without a section name before it".to_string(),
                    });
                };
                if depth + 1 > MAX_DEPTH {
                    return Err(Error {
                        line,
                        what: format!("blocks nested more than {MAX_DEPTH} deep"),
                    });
                }
                let name = head.words.join(" ");
                head.block = Some(block(toks, pos, Some((head.line, &name)), depth + 1)?);
                items.push(head);
                may_open = false;
            }
            Token::Close => {
                if open.is_none() {
                    return Err(Error {
                        line,
                        what: "`}` closes no section".to_string(),
                    });
                }
                if !words.is_empty() {
                    items.push(Item {
                        line: start,
                        words: std::mem::take(&mut words),
                        block: None,
                    });
                }
                return Ok(items);
            }
        }
    }
    match open {
        Some((line, name)) => Err(Error {
            line,
            what: format!("`{name} {{` is never closed: a `}}` is missing"),
        }),
        None => Ok(items),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn words(i: &Item) -> Vec<&str> {
        i.words.iter().map(String::as_str).collect()
    }

    #[test]
    fn sections_options_lists_and_comments() {
        let t = parse(
            b"# head\nSync {\n\tMode FTFW {\n\t}\n\tUDP Default {\n\t\tPort 3780 # sync\n\t}\n}\nGeneral {\n  Filter From Userspace {\n    State Accept { ESTABLISHED CLOSED for TCP }\n    Protocol Accept {\n      TCP\n      UDP\n    }\n  }\n}\n",
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert!(t[0].is("sync") && t[0].line == 2);
        let sync = t[0].children();
        assert_eq!(words(&sync[0]), ["Mode", "FTFW"]);
        assert_eq!(sync[0].children(), &[]);
        assert_eq!(words(&sync[1]), ["UDP", "Default"]);
        let port = &sync[1].children()[0];
        assert_eq!((port.line, words(port)), (6, vec!["Port", "3780"]));
        let filter = &t[1].children()[0];
        assert_eq!(filter.args(), ["From", "Userspace"]);
        let state = &filter.children()[0];
        assert_eq!(
            words(&state.children()[0]),
            ["ESTABLISHED", "CLOSED", "for", "TCP"]
        );
        assert_eq!(state.children()[0].line, 11);
        let protos: Vec<_> = filter.children()[1]
            .children()
            .iter()
            .map(Item::key)
            .collect();
        assert_eq!(protos, ["TCP", "UDP"]);
    }

    #[test]
    fn a_brace_on_the_next_line_opens_the_section_before_it() {
        let t = parse(b"Sync\n{\n  Mode NOTRACK\n  {\n  }\n}\n").unwrap();
        assert!(t[0].is("SYNC"));
        assert!(t[0].children()[0].is("mode"));
        assert!(t[0].children()[0].block.is_some());
    }

    #[test]
    fn broken_files_are_errors_with_their_line() {
        let e = |s: &str| parse(s.as_bytes()).unwrap_err();
        assert_eq!(e("Sync {\n  Mode FTFW {\n}\n").line, 1);
        assert!(e("Sync {\n}\n}\n").what.contains("closes no section"));
        assert_eq!(e("Sync {\n}\n}\n").line, 3);
        assert_eq!(e("Sync {\n}\n{\n}\n").line, 3);
        assert_eq!(e("General {\n\x01\n}").line, 2);
        assert!(e("General {\nHashSize \u{7f}\n}").what.contains("control"));
        let bad = parse(b"a\nb\n\xff\xfe").unwrap_err();
        assert_eq!((bad.line, bad.what.as_str()), (3, "not UTF-8 text"));
        let deep = "a {\n".repeat(MAX_DEPTH + 1);
        assert!(e(&deep).what.contains("nested"));
    }

    proptest! {
        /// Any bytes give a tree or an error at a line of the input, never a panic.
        #[test]
        fn any_bytes_parse_or_fail_at_a_line(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let lines = bytes.iter().filter(|&&b| b == b'\n').count() + 1;
            match parse(&bytes) {
                Ok(_) => {}
                Err(e) => prop_assert!(e.line >= 1 && e.line <= lines, "{e}"),
            }
        }

        /// Text made of the file's own pieces (the likely inputs) too.
        #[test]
        fn any_config_like_text_parses_or_fails_at_a_line(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("{"), Just("}"), Just("\n"), Just(" "), Just("#"), Just("Sync"),
                    Just("UDP"), Just("Port"), Just("3780"), Just("\t"),
                ],
                0..200,
            )
        ) {
            let text: String = parts.concat();
            let lines = text.matches('\n').count() + 1;
            if let Err(e) = parse(text.as_bytes()) {
                prop_assert!(e.line >= 1 && e.line <= lines, "{e}");
            }
        }
    }
}
